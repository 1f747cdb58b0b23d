"""A local S3 endpoint (moto) so the embedded tansu broker's ``s3://`` storage
survives broker restarts: used by the broker-outage tests.  Needs ``moto[server]``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from driftmon.testing.embedded import EmbeddedBrokerError, _die_with_parent, free_port

log = logging.getLogger(__name__)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MotoS3:
    """A local ``moto_server`` S3 endpoint with one bucket, so tansu's
    ``s3://BUCKET/`` storage survives broker restarts (outage tests).

    Pass :attr:`env` to :class:`EmbeddedBroker` and use :attr:`storage`.
    Data lives in the moto process: it is gone once :meth:`stop` runs.
    """

    region = "eu-west-2"
    # Dummy credentials: moto accepts anything, tansu's S3 client wants some.
    _key_id = "driftmon-test"
    _secret = "driftmon-test-secret"

    def __init__(self, port: int = 0, bucket: str = "tansu", log_path: str | os.PathLike[str] | None = None):
        self.port = port or free_port()
        self.bucket = bucket
        self.log_path = str(log_path) if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def env(self) -> dict[str, str]:
        """Environment tansu's S3 (object_store) client reads."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self._key_id,
            "AWS_SECRET_ACCESS_KEY": self._secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def __repr__(self) -> str:
        return f"MotoS3(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    def start(self, timeout: float = 30.0) -> MotoS3:
        """Start ``moto_server`` and create the bucket (tansu does not create it)."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise EmbeddedBrokerError("moto is not installed: pip install 'moto[server]'") from exc
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [*_die_with_parent(), sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            if not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedBrokerError(f"moto_server exited with code {self._proc.returncode}")
            try:
                self._create_bucket()
                return self
            except (OSError, urllib.error.URLError) as exc:
                last_err = exc
                time.sleep(0.1)
        self.stop()
        raise EmbeddedBrokerError(f"moto_server on {self.endpoint} not ready after {timeout}s: {last_err}")

    def _create_bucket(self) -> None:
        body = (
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            f"<LocationConstraint>{self.region}</LocationConstraint></CreateBucketConfiguration>"
        ).encode()
        req = urllib.request.Request(f"{self.endpoint}/{self.bucket}", data=body, method="PUT")
        try:
            with _NO_PROXY.open(req, timeout=2) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409 = BucketAlreadyOwnedByYou / Exists
                raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
