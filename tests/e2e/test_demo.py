"""``driftmon demo``, the README's first command, run for real as a subprocess.

The demo's drift episode starts 45 s in and the first alert prints about
15-30 s later, so this test takes about a minute: it watches stdout for the
banner and a signed FIRING line, scrapes the /metrics address the banner
printed while the demo runs, then stops it with SIGINT (Ctrl-C) and expects a
clean exit well before ``--duration`` ran out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.kafka, pytest.mark.one_client]  # the demo runs its own config (default client)

ROOT = Path(__file__).resolve().parents[2]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _divergence_series(address: str) -> list[dict[str, str]]:
    with _NO_PROXY.open(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return [s.labels for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == "driftmon_divergence"]


def test_demo_prints_a_signed_firing_alert_and_serves_divergence_metrics(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftmon.cli", "demo", "--duration", "170"],
        cwd=tmp_path,  # a directory without config/: the demo must find its shipped config/demo.yaml
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []
    changed = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with changed:
                lines.append(raw.decode(errors="replace").rstrip())
                changed.notify_all()
        with changed:
            changed.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_line(pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with changed:
            while True:
                for line in lines:
                    m = re.search(pattern, line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    pytest.fail(f"no line matching {pattern!r} (exit code {proc.poll()}):\n" + "\n".join(lines[-40:]))
                changed.wait(min(left, 1.0))

    try:
        address = wait_line(r"metrics\s+http://(\S+)/metrics", 60).group(1)
        # the first 15 s windows close within ~20-35 s: the series appears while the demo runs
        deadline = time.monotonic() + 90
        series: list[dict[str, str]] = []
        while not series:
            assert proc.poll() is None, "\n".join(lines[-40:])
            if time.monotonic() > deadline:
                pytest.fail("driftmon_divergence never appeared on /metrics:\n" + "\n".join(lines[-40:]))
            series = _divergence_series(address)
            time.sleep(1)
        assert {s["stream"] for s in series} <= {"interactions", "predictions"}
        assert all(s["metric"] == "kl" for s in series)

        firing = wait_line(r"^FIRING\s+(warning|critical)\s+(\S+).*\bsig ok$", 150)
        assert firing.group(2).split("/")[0] in ("interactions", "predictions")
        assert not any("SIG BAD" in line or "unsigned" in line for line in lines)
        assert _divergence_series(address)  # still served while the alert is up

        proc.send_signal(signal.SIGINT)  # Ctrl-C: drain, checkpoint, stop, close the broker
        assert proc.wait(timeout=30) == 0, "\n".join(lines[-40:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    summary = wait_line(r"driftmon demo: stopped after \d+s; (\d+) alert notification", 1)
    assert int(summary.group(1)) >= 1
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
