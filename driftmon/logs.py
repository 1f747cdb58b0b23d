"""Logging setup: text or JSON lines, with every configured secret scrubbed."""

from __future__ import annotations

import json
import logging
import sys
import time
from urllib.parse import urlsplit

from driftmon.config import Config


class SecretFilter(logging.Filter):
    """Replaces any configured secret value in a formatted message by ``***``."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            doc["exc"] = record.exc_text
        elif record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def secrets_of(cfg: Config) -> list[str]:
    out = [w.secret for w in cfg.alerts.webhooks if w.secret]
    for w in cfg.alerts.webhooks:  # credentials and tokens carried in webhook URLs
        parts = urlsplit(w.url)
        out += [x for x in (parts.password, parts.query) if x]
    out += [s for s in (cfg.kafka.sasl_plain_password, cfg.kafka.ssl_password) if s]
    return out


def setup_logging(cfg: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.logging.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(secrets_of(cfg)))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.logging.level.upper())
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
