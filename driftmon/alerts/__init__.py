"""Alert webhooks: Alertmanager-compatible, HMAC-signed, retried from a durable outbox.

Use :class:`AlertDispatcher`; see ``docs/webhooks.md`` for the wire format.
The local test/demo receiver lives in :mod:`driftmon.alerts.sink` (not imported
here so ``python -m driftmon.alerts.sink`` runs cleanly).
"""

from driftmon.alerts.payload import build_payload, encode, fingerprint, sign, verify
from driftmon.alerts.sender import AlertDispatcher

__all__ = ["AlertDispatcher", "build_payload", "encode", "fingerprint", "sign", "verify"]
