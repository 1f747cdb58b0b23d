"""Process-wide GC settings for the processes that ingest: ``driftmon run`` and the decode worker."""

from __future__ import annotations

import gc

# gen-0 threshold: above the young objects one poll keeps alive (kafka-python's records and their
# header lists, two per record, plus the batch's lists), so a poll triggers no collection
GC_GEN0_THRESHOLD = 100_000
GC_GEN0_PER_POLL_RECORD = 20


def tune_gc(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Process-wide GC settings for a dedicated ingest process (``driftmon run``).

    Every poll allocates tens of thousands of short-lived containers (kafka-python's
    records, their header lists, the decoded columns) that reference counting frees
    when the poll is counted.  Python's cyclic GC instead runs a gen-0 collection
    whenever more than ``threshold`` such objects are alive, so with the default of 700
    it ran many times per poll, and still once per poll at 10,000: each collection walks
    every young object of the poll and moves them to an older generation, which walks them
    again, and it evicts the caches the decoding works in (the daemon's decode and count
    ran ~1.7x slower than the same code alone; docs/benchmarks.md).  Freezing the start-up
    heap and a gen-0 threshold above what one poll allocates removes that: collections run
    only as often as long-lived objects accumulate.  Cyclic garbage, which driftmon's own
    code does not make, can reach ``gen0`` objects (a few MB) before it is collected.
    """
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], gen0), *threshold[1:])
