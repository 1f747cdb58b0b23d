"""Alert webhooks: Alertmanager-compatible, HMAC-signed, retried from a durable outbox.

Use :class:`AlertDispatcher`; see ``docs/webhooks.md`` for the wire format.
The local test/demo receiver is :mod:`driftmon.testing.receiver`.
"""

from driftmon.outputs.alerts.payload import build_payload, encode, fingerprint, sign, verify
from driftmon.outputs.alerts.sender import AlertDispatcher

__all__ = ["AlertDispatcher", "build_payload", "encode", "fingerprint", "sign", "verify"]
