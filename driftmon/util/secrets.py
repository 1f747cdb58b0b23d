"""Secret scrubbing: the one place that knows which values are secret and how
they are hidden (``***``) from logs, tracebacks, printed configs and URLs.

* :data:`SECRET_KEYS`: config fields (and kafka-python settings) that hold secrets;
* :func:`secrets_of`: every secret value of a config, for :class:`SecretFilter`;
* :func:`scrub`: replace given secret values anywhere in a text;
* :class:`SecretFilter`: a logging filter scrubbing messages and tracebacks;
* :func:`redact_url`, :func:`mask_url`, :func:`redact_kwargs`, :func:`redact_field`:
  safe-to-show forms of a webhook URL, of client settings and of a config field.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftmon.config import Config

MASK = "***"
SECRET_KEYS = ("secret", "ssl_password", "sasl_plain_password", "ssl.key.password", "sasl.password")  # +librdkafka names
MIN_SECRET_LENGTH = 4  # shorter values would scrub ordinary words out of every log line


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***`` (longest first,
    so a secret that contains another is hidden whole)."""
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def secrets_of(cfg: Config) -> list[str]:
    """Every secret value in a config: webhook secrets, credentials and tokens carried
    in webhook URLs, and the Kafka SASL and SSL key passwords."""
    out = [w.secret for w in cfg.alerts.webhooks if w.secret]
    for w in cfg.alerts.webhooks:  # credentials and tokens carried in webhook URLs
        parts = urllib.parse.urlsplit(w.url)
        out += [x for x in (parts.password, parts.query) if x]
    out += [s for s in (cfg.kafka.sasl_plain_password, cfg.kafka.ssl_password) if s]
    return out


class SecretFilter(logging.Filter):
    """Replaces any configured secret value in a formatted message by ``***``."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg, record.args = self.scrub(record.getMessage()), None
            if record.exc_info and not record.exc_text:  # tracebacks may quote secrets too
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = self.scrub(record.stack_info)
        return True


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` plus ``/...`` if there is a path: no userinfo, query
    or path (webhook URLs often carry tokens in any of them)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    tail = "/..." if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def mask_url(url: str) -> str:
    """A URL for ``repr``: the query dropped and any userinfo replaced by ``***``."""
    url = url.split("?", 1)[0]
    if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        scheme, rest = url.split("//", 1)
        url = f"{scheme}//{MASK}@{rest.split('@', 1)[1]}"
    return url


def redact_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of client kwargs safe to log (passwords replaced by ``***``)."""
    return {k: (MASK if k in SECRET_KEYS and v is not None else v) for k, v in kwargs.items()}


def redact_field(name: str, value: Any) -> Any:
    """A config field's value as printed: secrets as ``***``, URLs as :func:`redact_url`."""
    if name in SECRET_KEYS and value:
        return MASK
    if name == "url" and isinstance(value, str):
        return redact_url(value)
    return value
