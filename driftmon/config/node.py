"""Reading one level of a YAML config: typed accessors that know their key path.

Used by :mod:`driftmon.config.load`; every error names the key path and what
was expected.  ``${VAR}`` / ``${VAR:-default}`` are replaced from the
environment mapping given (never read from ``os.environ`` here).
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping
from typing import Any

import yaml

from driftmon.config.yamlsafe import load_yaml
from driftmon.util.secrets import SECRET_KEYS

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

# Upper bounds every integer and duration is held to unless a key sets its own:
# Kafka's millisecond settings are int32 on the wire, and waits longer than ~9.2e9 s
# overflow threading and socket timeouts (OverflowError in the daemon's threads).
MAX_INT = 2**31 - 1
MAX_DURATION = 366 * 86400.0


class ConfigError(ValueError):
    """A config problem, with the key path where it was found."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 6, 6, 3


def _show(value: Any) -> str:
    """A short repr for error messages; never walks a large value."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int over Python's digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _num(x: float, unit: str = "") -> str:
    if unit == "s" and x >= 86400 and x % 86400 == 0:
        return f"{x / 86400:g}d"
    return f"{x:g}{unit}"


def _bounds(minimum: float | None, above: float | None, maximum: float | None, unit: str = "") -> str:
    """``>= 1``, ``> 0``, ``in [1, 10]``, ``in (0, 1]``: the range a value must be in."""
    low = f"[{_num(minimum, unit)}" if minimum is not None else f"({_num(above, unit)}" if above is not None else None
    if low is not None and maximum is not None:
        return f"in {low}, {_num(maximum, unit)}]"
    if low is not None:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    return f"<= {_num(maximum, unit)}" if maximum is not None else ""


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return f if math.isfinite(f) else None


def check_range(value: float, path: str, what: str, minimum: float | None = None, above: float | None = None,
                maximum: float | None = None, shown: Any = None, unit: str = "") -> None:
    """Raise unless ``minimum <= value`` (or ``above < value``) and ``value <= maximum``."""
    if (minimum is not None and value < minimum) or (above is not None and value <= above) or (
            maximum is not None and value > maximum):
        got = _show(value if shown is None else shown)
        raise ConfigError(path, f"expected {what} {_bounds(minimum, above, maximum, unit)}, got {got}")


class _Node:
    """A mapping being read, which remembers its path and which keys it accepts.

    Every key read, or asked about with :meth:`has`, is a key this section
    accepts; :meth:`done` reports any other key with the list of those.
    """

    def __init__(self, data: Any, path: str, env: Mapping[str, str]):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {_show(data)}")
        self.data, self.path, self.env = data, path, env
        self.used: set[str] = set()

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, default: Any = None, typed: bool = True) -> Any:
        self.used.add(key)
        value = self.data.get(key, default)
        return _interpolate(value, self.sub(key), self.env, typed)

    def has(self, key: str) -> bool:
        self.used.add(key)
        return key in self.data

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None,
             nonempty: bool = False) -> Any:
        value = self.raw(key, None if default is ... else default, typed=False)
        if value is None and default is ...:
            raise ConfigError(self.sub(key), "required, expected a string")
        if value is None and default is None:  # an optional string, unset
            return None
        if not isinstance(value, str):  # (null too where the key has a default: it is not unset)
            shown = f"a {type(value).__name__}" if key in SECRET_KEYS else _show(value)
            raise ConfigError(self.sub(key), f"expected a string, got {shown}")
        if choices and value not in choices:
            raise ConfigError(self.sub(key), f"expected one of {', '.join(choices)}, got {_show(value)}")
        if nonempty and not value.strip():
            raise ConfigError(self.sub(key), f"expected a non-empty string, got {_show(value)}")
        return value

    def integer(self, key: str, default: Any, minimum: int | None = None, maximum: int | None = MAX_INT,
                nullable: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.sub(key), f"expected an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.sub(key), f"expected an integer >= {minimum}, got {_show(value)}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.sub(key), f"expected an integer <= {maximum}, got {_show(value)}")
        return value

    def number(self, key: str, default: Any, minimum: float | None = None, above: float | None = None,
               maximum: float | None = None, nullable: bool = False) -> Any:
        """A finite number (never NaN or infinite) within the bounds given; ``null``
        only where ``nullable``."""
        value = self.raw(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.sub(key), f"expected a number, got {_show(value)}")
        f = _finite(value)
        if f is None:
            expected = " ".join(filter(None, ("a finite number", _bounds(minimum, above, maximum))))
            raise ConfigError(self.sub(key), f"expected {expected}, got {_show(value)}")
        check_range(f, self.sub(key), "a finite number", minimum, above, maximum, shown=value)
        return f

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.sub(key), f"expected true or false, got {_show(value)}")
        return value

    def duration(self, key: str, default: Any, minimum: float | None = 0.0, above: float | None = None,
                 maximum: float | None = MAX_DURATION, nullable: bool = False) -> Any:
        """Seconds: a finite duration (``300``, ``"5m"``, ``"250ms"``) within the bounds given;
        ``null`` only where ``nullable``."""
        value = self.raw(key, default)
        if value is None and nullable:
            return None
        seconds = parse_duration(value, self.sub(key))
        check_range(seconds, self.sub(key), "a duration", minimum if above is None else None, above, maximum,
                    shown=value, unit="s")
        return seconds

    def str_list(self, key: str, default: Any = (), nonempty: bool = False) -> tuple[str, ...]:
        value = self.raw(key, default, typed=False)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.sub(key), f"expected a list of strings, got {_show(value)}")
        if nonempty and (not value or not all(v.strip() for v in value)):
            raise ConfigError(self.sub(key), f"expected a non-empty list of non-empty strings, got {_show(value)}")
        return tuple(value)

    def node(self, key: str) -> _Node:
        return _Node(self.raw(key), self.sub(key), self.env)

    def done(self, what: str = "") -> None:
        """Report the first key this section does not accept, and the keys it does."""
        unknown = sorted(set(map(str, self.data)) - self.used)
        if unknown:
            accepted = ", ".join(sorted(self.used))
            where = f" for {what}" if what else ""
            hint = f"expected one of: {accepted}" if accepted else "this section takes no keys"
            raise ConfigError(self.sub(unknown[0]), f"unknown key{where} ({hint})")


def _interpolate(value: Any, path: str, env: Mapping[str, str], typed: bool = True) -> Any:
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env, typed) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")

    whole = _ENV.fullmatch(value.strip())
    result = _ENV.sub(replace, value)
    if typed and whole and result.strip():
        # "${MIN_COUNT}" standing alone takes the YAML type of its value (500 -> int)
        try:
            loaded = load_yaml(result)
        except yaml.YAMLError:
            return result
        return loaded if loaded is None or isinstance(loaded, (int, float, bool)) else result
    return result


def parse_duration(value: Any, path: str = "") -> float:
    """``300``, ``"300s"``, ``"5m"``, ``"250ms"``, ``"1h"`` -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a duration like 300s or 5m, got {_show(value)}")
    if isinstance(value, (int, float)):
        seconds = _finite(value)
        if seconds is None:
            raise ConfigError(path, f"expected a finite duration like 300s or 5m, got {_show(value)}")
    else:
        m = _DURATION.match(value) if isinstance(value, str) else None
        if not m:
            raise ConfigError(path, f"expected a duration like 300s, 5m or 250ms, got {_show(value)}")
        seconds = _finite(m.group(1))
        if seconds is None:
            raise ConfigError(path, f"expected a finite duration like 300s or 5m, got {_show(value)}")
        seconds *= _UNIT_SECONDS[m.group(2)]
    if seconds < 0:
        raise ConfigError(path, f"expected a non-negative duration, got {_show(value)}")
    return seconds
