"""Rules for the names and addresses in a config: Kafka topics, host:port pairs,
webhook URLs, log levels and dotted field paths.

Each ``check_*`` returns the value (normalised where said) or raises
:class:`~driftmon.config.node.ConfigError` naming the key path.  They are the
checks ``driftmon run`` would otherwise fail on later: kafka-python refusing a
topic, the status server failing to bind, every webhook delivery failing.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from driftmon.config.node import ConfigError, _show

# Kafka's own rule (kafka.common.internals.Topic): 1..249 of [a-zA-Z0-9._-], not "." or "..".
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*))(?::(?P<port>[^:]*))?")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_topic(name: str, path: str, note: str = "") -> str:
    """A legal Kafka topic name."""
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        raise ConfigError(path, f"{_show(name)}{note} is not a legal Kafka topic name (1 to 249 characters of "
                                "a-z A-Z 0-9 . _ -, and not . or ..)")
    return name


def _check_host(host: str, path: str) -> None:
    if not host:
        raise ConfigError(path, "expected host:port, got an empty host")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if re.fullmatch(r"[0-9.]+", host) or len(host) > 253 or not all(_LABEL.fullmatch(p) for p in labels):
        raise ConfigError(path, f"expected an IP address or a host name, got {_show(host)}")


def _check_port(port: str | None, path: str, minimum: int) -> int:
    if port is None or not port.isdigit() or not minimum <= int(port) <= 65535:
        shown = "no port" if port is None else _show(port)
        raise ConfigError(path, f"expected a port in {minimum}..65535, got {shown}")
    return int(port)


def check_listen(value: str, path: str) -> str:
    """``host:port`` the status server can bind: an IPv4 address or host name and a
    port in 0..65535 (0: any free port)."""
    m = _HOST_PORT.fullmatch(value.strip())
    if m is None or m.group("port") is None:
        raise ConfigError(path, f"expected host:port, got {_show(value)}")
    if m.group("v6") is not None:
        raise ConfigError(path, f"expected an IPv4 address or host name (the status server does not listen "
                                f"on IPv6), got {_show(value)}")
    _check_host(m.group("host"), path)
    _check_port(m.group("port"), path, 0)
    return value.strip()


def check_bootstrap(servers: tuple[str, ...], path: str) -> tuple[str, ...]:
    """``host[:port]`` entries (a comma-separated entry, e.g. from one environment
    variable, is split); IPv6 addresses in brackets.  Returns the entries, split."""
    out: list[str] = []
    for i, entry in enumerate(servers):
        for part in entry.split(","):
            where = f"{path}[{i}]"
            m = _HOST_PORT.fullmatch(part.strip())
            if m is None:
                raise ConfigError(where, f"expected host:port, got {_show(part)}")
            if m.group("v6") is not None:
                try:
                    ipaddress.IPv6Address(m.group("v6"))
                except ValueError:
                    raise ConfigError(where, f"expected an IPv6 address in [brackets], got {_show(part)}") from None
            else:
                _check_host(m.group("host"), where)
            if m.group("port") is not None:
                _check_port(m.group("port"), where, 1)
            out.append(part.strip())
    if not out:
        raise ConfigError(path, "expected at least one broker address (host:port)")
    return tuple(out)


def check_url(url: str, path: str) -> str:
    """An http(s) URL with a host and a valid port.  Never echoes the URL: it may
    carry credentials or a token."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(path, "expected a URL without spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ConfigError(path, f"expected an http:// or https:// URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, "expected an http:// or https:// URL with a host")
    if port == 0:
        raise ConfigError(path, "expected a URL port in 1..65535, got 0")
    return url


def check_field_path(value: str, path: str) -> str:
    """A dotted path into the event (``item.category``): no empty parts."""
    if not value or any(not p for p in value.split(".")):
        raise ConfigError(path, f"expected a field name or dotted path like item.category, got {_show(value)}")
    return value


def check_log_level(value: str, path: str) -> str:
    """A logging level name, any case; returned upper-case."""
    if not isinstance(value, str) or (value.upper() not in LOG_LEVELS and value.upper() not in ("WARN", "FATAL")):
        raise ConfigError(path, f"expected one of {', '.join(LOG_LEVELS)}, got {_show(value)}")
    return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(value.upper(), value.upper())
