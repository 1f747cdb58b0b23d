"""kafka-python's record reader against driftmon's batch reader (``kafka.record_reader``), no broker.

    python bench/records.py                       # ns/record of both readers, side by side, and the ratio
    python bench/records.py --callgrind           # instructions per record (repeatable under load)
    python bench/records.py --gzip --headers      # compressed batches, records with two headers

Builds a fetch response's record set with kafka-python's own builder (N synthetic interaction
events, ``driftmon.testing.synth``, ``--per-batch`` records per v2 batch, as a producer with a
large ``batch_size`` writes them) and reads all of it through ``Fetcher.PartitionRecords.take``,
``--take`` records at a time (``max_poll_records``), with kafka-python's class and with
``driftmon.source.kafka_records``' subclass: alternating, best of ``--repeats``, with
``service.process.tune_gc()`` as the daemon runs.  Both must return the same records (checked).
"""

from __future__ import annotations

import argparse
import operator
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka.consumer.fetcher import Fetcher, IsolationLevel  # noqa: E402
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402

from driftmon.service.process import tune_gc  # noqa: E402
from driftmon.source.kafka_records import partition_records_class  # noqa: E402
from driftmon.testing import synth  # noqa: E402

READERS = ("kafka-python", "batch")


def record_set(n: int, per_batch: int, gzip: bool, headers: bool) -> bytes:
    values = list(synth.encode(synth.interactions(n, start=time.time() - n / 1000, rate=1000.0, seed=3)))
    out, offset, now = b"", 0, int(time.time() * 1000)
    for i in range(0, n, per_batch):
        b = MemoryRecordsBuilder(2, 1 if gzip else 0, 1 << 30, offset=offset)
        for j, v in enumerate(values[i:i + per_batch]):
            # a W3C trace context of its own per record, and a header every record shares
            hdrs = [("traceparent", b"00-%032x-%016x-01" % (i + j, j)), ("source", b"web")] if headers else []
            b.append(now + (i + j) // 10, None, v, hdrs)
        b.close()
        out += bytes(b.buffer())
        offset += len(values[i:i + per_batch])
    return out


def read_all(reader: str, data: bytes, take: int) -> list:
    cls = Fetcher.PartitionRecords if reader == "kafka-python" else partition_records_class(Fetcher.PartitionRecords)
    part = cls(0, TopicPartition("bench", 0), MemoryRecords(data), key_deserializer=None, value_deserializer=None,
               check_crcs=True, isolation_level=IsolationLevel.READ_UNCOMMITTED, aborted_transactions=[],
               metric_aggregator=None, on_drain=lambda x: None)
    out: list = []
    while part:
        got = part.take(take)
        if not got:
            break
        out.extend(got)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--per-batch", type=int, default=4_500, help="records per record batch")
    ap.add_argument("--take", type=int, default=5_000, help="records per take() (max_poll_records)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gzip", action="store_true")
    ap.add_argument("--headers", action="store_true")
    ap.add_argument("--callgrind", action="store_true", help="instructions per record under valgrind")
    ap.add_argument("--one", choices=READERS, help=argparse.SUPPRESS)  # (the --callgrind subprocess)
    args = ap.parse_args(argv)
    data = record_set(args.events, args.per_batch, args.gzip, args.headers)
    tune_gc()
    if args.one:  # once, collected only inside methodcaller's call
        operator.methodcaller("__call__")(lambda: read_all(args.one, data, args.take))
        return 0
    label = f"{args.events:,} records ({len(data) / 1e6:.1f} MB, {args.per_batch:,} per batch" \
            f"{', gzip' if args.gzip else ''}{', 2 headers each' if args.headers else ''}), take({args.take:,})"
    if args.callgrind:
        counts = {}
        with tempfile.TemporaryDirectory() as tmp:
            for reader in READERS:
                cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=methodcaller_call",
                       f"--callgrind-out-file={Path(tmp, 'cg.' + reader)}", sys.executable, str(Path(__file__).resolve()),
                       "--events", str(args.events), "--per-batch", str(args.per_batch), "--take", str(args.take),
                       "--one", reader] + (["--gzip"] if args.gzip else []) + (["--headers"] if args.headers else [])
                res = subprocess.run(cmd, check=True, capture_output=True, text=True)
                line = [x for x in res.stderr.splitlines() if "Collected" in x]
                counts[reader] = float(line[-1].split(":")[-1].strip()) / args.events
        print(f"instructions per record (callgrind), {label}:")
        for reader in READERS:
            print(f"  {reader:13} {counts[reader]:>9,.0f}")
        print(f"  kafka-python / batch: {counts['kafka-python'] / counts['batch']:.2f}x")
        return 0
    want = [tuple(r) for r in read_all("kafka-python", data, args.take)]
    assert [tuple(r) for r in read_all("batch", data, args.take)] == want, "the readers differ"
    best = {r: float("inf") for r in READERS}
    for k in range(args.repeats):
        for reader in (READERS if k % 2 == 0 else READERS[::-1]):
            t = time.perf_counter()
            read_all(reader, data, args.take)
            best[reader] = min(best[reader], time.perf_counter() - t)
    print(f"{label}, best of {args.repeats} alternating:")
    for reader in READERS:
        print(f"  {reader:13} {best[reader] / args.events * 1e9:>7,.0f} ns/record  {args.events / best[reader]:>12,.0f} records/s")
    print(f"  batch reader speed-up: {best['kafka-python'] / best['batch']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
