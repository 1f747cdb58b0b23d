"""Logging setup: text or JSON lines, with every configured secret scrubbed."""

from __future__ import annotations

import json
import logging
import sys
import time

from driftmon.config import Config
from driftmon.util.secrets import SecretFilter, secrets_of


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


class ClientTracebackFilter(logging.Filter):
    """Kafka client libraries log network errors with full tracebacks (kafka-python's
    ``log.exception`` when a socket closes under it, e.g. during a shutdown).  They are the
    library's, expected and handled (it retries or the daemon is stopping), so at levels above
    DEBUG each keeps its message and the exception's one-line summary, not the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.split(".", 1)[0] == "kafka":
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})" if exc is not None \
                else record.getMessage()
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(cfg: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.logging.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if cfg.logging.level.upper() != "DEBUG":
        handler.addFilter(ClientTracebackFilter())
    handler.addFilter(SecretFilter(secrets_of(cfg)))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.logging.level.upper())
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
