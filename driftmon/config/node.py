"""Reading one level of a YAML config: typed accessors that know their key path.

Used by :mod:`driftmon.config.load`; every error names the key path and what
was expected.  ``${VAR}`` / ``${VAR:-default}`` are replaced from the
environment mapping given (never read from ``os.environ`` here).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from driftmon.config.yamlsafe import load_yaml
from driftmon.util.secrets import SECRET_KEYS

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """A config problem, with the key path where it was found."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Node:
    """A mapping being read, which remembers its path and which keys were used."""

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
        return key in self.data

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> Any:
        value = self.raw(key, None if default is ... else default, typed=False)
        if value is None and default is ...:
            raise ConfigError(self.sub(key), "required, expected a string")
        if value is None:
            return None
        if not isinstance(value, str):
            shown = f"a {type(value).__name__}" if key in SECRET_KEYS else _show(value)
            raise ConfigError(self.sub(key), f"expected a string, got {shown}")
        if choices and value not in choices:
            raise ConfigError(self.sub(key), f"expected one of {', '.join(choices)}, got {_show(value)}")
        return value

    def integer(self, key: str, default: Any, minimum: int | None = None) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.sub(key), f"expected an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.sub(key), f"expected an integer >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any, minimum: float | None = None) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.sub(key), f"expected a number, got {_show(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.sub(key), f"expected a number >= {minimum}, got {value}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.sub(key), f"expected true or false, got {_show(value)}")
        return value

    def duration(self, key: str, default: Any) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        return parse_duration(value, self.sub(key))

    def str_list(self, key: str, default: Any = ()) -> tuple[str, ...]:
        value = self.raw(key, default, typed=False)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.sub(key), f"expected a list of strings, got {_show(value)}")
        return tuple(value)

    def node(self, key: str) -> _Node:
        return _Node(self.raw(key), self.sub(key), self.env)

    def done(self) -> None:
        unknown = sorted(set(map(str, self.data)) - self.used)
        if unknown:
            raise ConfigError(self.sub(unknown[0]), f"unknown key (expected one of: {', '.join(sorted(self.used))})")


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
        if value < 0:
            raise ConfigError(path, f"expected a non-negative duration, got {value}")
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise ConfigError(path, f"expected a duration like 300s, 5m or 250ms, got {_show(value)}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
