"""The outbox and the firing-alert tracker on a disk that fills up (RLIMIT_FSIZE in a child
process): nothing is dropped, nothing is left half written, ``sync`` says when it is durable."""

from __future__ import annotations

import os

from tests.fslimits import run_limited, temp_files, tree_modes


def test_outbox_keeps_unwritable_alerts_in_memory_delivers_them_and_writes_them_when_space_returns(tmp_path):
    """A message that cannot be written used to be logged and dropped ("alert dropped"); now it
    stays queued (deliverable from memory), ``sync`` raises until it is on disk (the daemon holds
    its checkpoint back), and the FIFO order and the ``outbox_max`` bound still hold."""
    box_dir = tmp_path / "state" / "outbox" / "r"
    got = run_limited(f"""
        from driftmon.outputs.alerts.outbox import AlertsNotWritten, Outbox
        box = Outbox({str(box_dir)!r}, max_items=4)
        out = {{}}
        box.put(b"a" * 500)  # fits under the limit
        dropped = [box.put(bytes([c]) * 5000) for c in b"bcd"]  # each over the limit: kept in memory
        out["dropped"] = dropped
        out["len"], out["unwritten"] = len(box), box.unwritten
        seq, body = box.head()
        out["head"] = body[:1].decode()
        box.ack(seq)  # "a" delivered
        seq, body = box.head()  # next comes from memory
        out["head2"] = body[:1].decode()
        try:
            box.sync()
            out["sync"] = "ok"
        except AlertsNotWritten as exc:
            out["sync"] = [exc.output, exc.errno, str(exc)]
        out["dropped2"] = [box.put(b"e" * 5000), box.put(b"f" * 5000)]  # bound of 4: the oldest go
        lift()
        box.sync()
        out["unwritten_after"] = box.unwritten
        again = Outbox({str(box_dir)!r}, max_items=4)  # what a restart finds
        bodies = []
        while (item := again.head()) is not None:
            bodies.append(item[1][:1].decode())
            again.ack(item[0])
        out["after_restart"] = bodies
        print(json.dumps(out))
        """, limit=2000)
    assert got["dropped"] == [0, 0, 0]
    assert (got["len"], got["unwritten"]) == (4, 3)
    assert (got["head"], got["head2"]) == ("a", "b")
    output, errno, message = got["sync"]
    assert output == "outbox" and errno == 27 and "3 undelivered message(s) not written" in message  # EFBIG
    assert got["dropped2"] == [0, 1]  # b, c, d, e then f: b is the oldest
    assert got["unwritten_after"] == 0
    assert got["after_restart"] == ["c", "d", "e", "f"]
    assert temp_files(tmp_path) == []


def test_firing_alert_tracker_rewrites_its_file_when_space_returns(tmp_path):
    path = tmp_path / "state" / "alerts" / "firing.json"
    got = run_limited(f"""
        from driftmon.outputs.alerts.outbox import AlertTracker, AlertsNotWritten, FiringAlert
        t = AlertTracker({str(path)!r})
        out = {{}}
        t.update(fire={{f"fp{{i}}": FiringAlert("s", "f" * 200, None, "warning", "2024-01-01T00:00:00.000Z")
                        for i in range(20)}})  # over the limit: never raises
        try:
            t.sync()
        except AlertsNotWritten as exc:
            out["sync"] = exc.output
        lift()
        t.sync()
        out["firing"] = len(AlertTracker({str(path)!r}).firing(("s", "f" * 200, None)))
        print(json.dumps(out))
        """, limit=1000)
    assert got == {"sync": "firing_alerts", "firing": 20}
    assert temp_files(tmp_path) == []
    assert tree_modes(tmp_path / "state") == {".": 0o700, "alerts": 0o700, "alerts/firing.json": 0o600}
    assert os.listdir(path.parent) == ["firing.json"]
