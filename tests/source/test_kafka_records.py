"""driftmon.source.kafka_records: the whole-batch reader equals kafka-python's own, record by record.

Fetches are built with kafka-python's own record builders (v0, v1 and v2 batches, gzip,
keys, headers, nulls, offset gaps, transactions, control batches) and read by
kafka-python's ``Fetcher.PartitionRecords`` and by the fast subclass, with the same
sequence of ``take(n)`` calls: the records, the next fetch offset after every take, the
metrics counters and the errors must all be the same.
"""

from __future__ import annotations

import collections
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBase
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.record.util import calc_crc32c, decode_varint
from kafka.structs import TopicPartition

from driftmon.source import kafka_records

TP = TopicPartition("t", 3)
Aborted = collections.namedtuple("Aborted", "producer_id first_offset")
ATTR = DefaultRecordBase.ATTRIBUTES_OFFSET
CRC = DefaultRecordBase.CRC_OFFSET

blobs = st.one_of(st.none(), st.binary(max_size=300))
header = st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20)))
headers = st.lists(header, max_size=3)
# records with any number of headers each, or (the column-wise header path) the same number each
records = st.one_of(
    st.lists(st.tuples(blobs, blobs, headers, st.integers(0, 10**6)), min_size=1, max_size=40),
    st.integers(1, 3).flatmap(lambda c: st.lists(
        st.tuples(blobs, blobs, st.lists(header, min_size=c, max_size=c), st.integers(0, 10**6)), min_size=1, max_size=40)),
)
batch = st.fixed_dictionaries({
    "magic": st.sampled_from([0, 1, 2, 2, 2]),
    "gzip": st.booleans(),
    "records": records,
    "gap": st.integers(0, 300),  # offsets skipped before the batch (compaction)
    "kind": st.sampled_from(["plain", "plain", "txn", "control-abort", "control-commit"]),
    "log_append": st.booleans(),
})


def _control(offset: int, producer_id: int, abort: bool) -> bytes:
    """A v2 control batch (an abort or commit marker) of ``producer_id`` at ``offset``."""
    b = MemoryRecordsBuilder(2, 0, 1 << 20, offset=offset, transactional=True, producer_id=producer_id,
                             producer_epoch=0, base_sequence=0)
    b.append(0, struct.pack(">hh", 0, 0 if abort else 1), b"")
    b.close()
    return _set_attributes(bytearray(b.buffer()), 0x20 | 0x10)


def _set_attributes(buf: bytearray, bits: int) -> bytes:
    attrs = struct.unpack_from(">h", buf, ATTR)[0] | bits
    struct.pack_into(">h", buf, ATTR, attrs)
    struct.pack_into(">I", buf, CRC, calc_crc32c(memoryview(buf)[ATTR:]))
    return bytes(buf)


def build(batches: list[dict], producer_id: int = 7) -> tuple[bytes, list[Aborted]]:
    """The bytes of a fetch response's record set, and the aborted transactions to pass."""
    out, offset, aborted = b"", 0, []
    for spec in batches:
        offset += spec["gap"]
        magic = spec["magic"]
        if magic == 2 and spec["kind"].startswith("control"):
            out += _control(offset, producer_id, spec["kind"] == "control-abort")
            offset += 1
            continue
        txn = magic == 2 and spec["kind"] == "txn"
        kw = {"transactional": True, "producer_id": producer_id, "producer_epoch": 0, "base_sequence": 0} if txn else {}
        b = MemoryRecordsBuilder(magic, 1 if spec["gzip"] else 0, 1 << 24, offset=offset, **kw)
        if txn and offset % 2:
            aborted.append(Aborted(producer_id, offset))
        for key, value, hdrs, ts in spec["records"]:
            if key is None and value is None:
                value = b""  # (kafka-python's builder refuses a record with neither)
            b.append(ts, key, value, hdrs if magic == 2 else None)
            offset += 1
        b.close()
        buf = b.buffer()
        if magic == 2 and spec["log_append"]:
            buf = _set_attributes(bytearray(buf), 0x08)
        out += bytes(buf)
    return out, aborted


def readers(data: bytes, fetch_offset: int, aborted: list[Aborted], check_crcs: bool = True,
            committed: bool = False) -> tuple[object, object]:
    fast_cls = kafka_records.partition_records_class(Fetcher.PartitionRecords)
    made = []
    for cls in (Fetcher.PartitionRecords, fast_cls):
        made.append(cls(fetch_offset, TP, MemoryRecords(data), key_deserializer=None, value_deserializer=None,
                        check_crcs=check_crcs,
                        isolation_level=IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED,
                        aborted_transactions=list(aborted), metric_aggregator=None, on_drain=lambda x: None))
    return made[0], made[1]


def take_all(part: object, takes: list[int | None]) -> list[tuple]:
    """Each take's records (as tuples), next fetch offset and truthiness, or the error raised."""
    seen = []
    for n in takes + [None, None]:
        try:
            got = part.take(n) if part else []  # type: ignore[attr-defined]
        except CorruptRecordError as exc:
            seen.append(("error", type(exc).__name__))
            continue
        seen.append(([tuple(r) for r in got], part.next_fetch_offset, bool(part)))  # type: ignore[attr-defined]
    seen.append(("read", part.records_read, part.bytes_read))  # type: ignore[attr-defined]
    return seen


def test_supported_by_the_installed_kafka_python():
    """CI's kafka-python is one the reader is for; a change there must be looked at, not skipped."""
    assert kafka_records.supported()
    assert ConsumerRecord._fields == kafka_records.CONSUMER_RECORD_FIELDS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(batch, min_size=1, max_size=5), takes=st.lists(st.one_of(st.none(), st.integers(1, 60)), max_size=8),
       skip=st.integers(0, 50), committed=st.booleans())
def test_the_same_records_offsets_and_counters_as_kafka_python(batches, takes, skip, committed):
    data, aborted = build(batches)
    stock, fast = readers(data, skip, aborted, committed=committed)
    assert take_all(fast, takes) == take_all(stock, takes)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(batch.filter(lambda b: not b["gzip"]), min_size=1, max_size=3),
       where=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255), takes=st.lists(st.integers(1, 30), max_size=4))
def test_corrupt_bytes_give_the_same_records_then_the_same_error(batches, where, byte, takes):
    """A byte changed anywhere past the first batch header (CRC checks off, so the records
    are parsed): the records before the damage and the error are kafka-python's."""
    data, aborted = build(batches)
    buf = bytearray(data)
    at = 61 + int(where * max(1, len(buf) - 61))
    if at >= len(buf):
        return
    buf[at] = byte
    stock, fast = readers(bytes(buf), 0, aborted, check_crcs=False)
    try:
        want = take_all(stock, takes)
    except Exception as exc:  # noqa: BLE001 - kafka-python fails outside take's error handling
        with pytest.raises(type(exc)):
            take_all(fast, takes)
        return
    assert take_all(fast, takes) == want



@st.composite
def few_header_counts(draw: st.DrawFn) -> list[tuple]:
    """At least a column batch of records with one to three header counts, each header's key
    and value either the same in every record (as producers usually send them) or drawn per record."""
    keys = st.text(max_size=8)
    values = st.one_of(st.none(), st.binary(max_size=20))
    shapes = draw(st.lists(st.tuples(st.one_of(st.none(), keys.map(lambda k: (k,))),
                                     st.one_of(st.none(), values.map(lambda v: (v,)))), min_size=1, max_size=4))
    # usually one header count; sometimes two or three (a tracer's sampled records carry one more)
    counts = draw(st.one_of(st.just([len(shapes)]),
                            st.lists(st.integers(0, len(shapes)), min_size=2, max_size=3, unique=True)))
    n = draw(st.integers(kafka_records.MIN_COLUMN_BATCH, 60))
    recs = []
    for _ in range(n):
        hdrs = [(draw(keys) if k is None else k[0], draw(values) if v is None else v[0])
                for k, v in shapes[:draw(st.sampled_from(counts))]]
        recs.append((draw(blobs), draw(blobs), hdrs, draw(st.integers(0, 10**6))))
    return recs


@settings(max_examples=200, deadline=None)
@given(recs=few_header_counts(),
       damage=st.one_of(st.none(), st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255))))
def test_headers_read_column_wise_are_kafka_pythons(recs, damage):
    """Records with one, two or three header counts (the column-wise header path): the
    headers as sent, and, with a byte changed anywhere, kafka-python's records then error."""
    data, _ = build([{"magic": 2, "gzip": False, "records": recs, "gap": 0, "kind": "plain", "log_append": False}])
    if damage is None:
        batch = MemoryRecords(data).next_batch()
        cols = kafka_records._plain_columns(bytes(batch._buffer), batch._pos, batch._num_records,
                                            decode_varint, CorruptRecordError)
        sent = [list(h) for _, _, h, _ in recs if h]
        assert cols is not None and (cols[-1][1] if sent else cols[-1]) == (sent or None)
    else:
        buf = bytearray(data)
        buf[61 + int(damage[0] * (len(buf) - 61))] = damage[1]
        data = bytes(buf)
    stock, fast = readers(data, 0, [], check_crcs=False)
    try:
        want = take_all(stock, [17])
    except Exception as exc:  # noqa: BLE001 - kafka-python fails outside take's error handling
        with pytest.raises(type(exc)):
            take_all(fast, [17])
        return
    assert take_all(fast, [17]) == want


@pytest.mark.parametrize("codec", [1, 2, 3, 4])  # gzip, snappy, lz4, zstd
def test_every_compression_codec_gives_kafka_pythons_records(codec):
    """Compressed v2 batches (decompressed by kafka-python's code) read column-wise, headers too."""
    b = MemoryRecordsBuilder(2, codec, 1 << 24, offset=10)
    for i in range(300):
        b.append(1000 + i, b"k%d" % i if i % 3 else None, b'{"i":%d}' % i, [("traceparent", b"%032x" % i), ("s", b"web")])
    b.close()
    data = bytes(b.buffer())
    stock, fast = readers(data, 0, [])
    got = take_all(fast, [100, None])
    assert got == take_all(stock, [100, None]) and len(got[0][0]) == 100 and len(got[1][0]) == 200

def test_a_failed_crc_is_an_error_before_any_record():
    data, _ = build([{"magic": 2, "gzip": False, "records": [(None, b"x" * 50, [], 1)] * 3, "gap": 0,
                      "kind": "plain", "log_append": False}])
    buf = bytearray(data)
    buf[-5] ^= 0xFF
    stock, fast = readers(bytes(buf), 0, [])
    with pytest.raises(CorruptRecordError, match="crc"):
        stock.take(10)
    with pytest.raises(CorruptRecordError, match="crc"):
        fast.take(10)


def test_install_only_where_it_is_kafka_pythons_behaviour(monkeypatch):
    """Per consumer, on the kafka-python series it was written for, without deserializers."""
    import kafka

    class NoFetcher:
        pass

    class Consumer:
        def __init__(self, **config):
            self._fetcher = Fetcher.__new__(Fetcher)  # (no client: only its class and config matter here)
            self._fetcher.config = {"key_deserializer": None, "value_deserializer": None, **config}

    assert kafka_records.install(NoFetcher()) is False
    plain, other = Consumer(), Consumer()
    assert kafka_records.install(plain) is True
    assert plain._fetcher.PartitionRecords is not Fetcher.PartitionRecords
    assert other._fetcher.PartitionRecords is Fetcher.PartitionRecords  # this consumer only
    assert kafka_records.install(Consumer(value_deserializer=bytes.decode)) is False
    monkeypatch.setattr(kafka, "__version__", "3.1.0")
    assert kafka_records.install(Consumer()) is False


def test_records_are_kafka_pythons_consumer_records():
    data, _ = build([{"magic": 2, "gzip": False, "records": [(b"k", b'{"a":1}', [("h", b"v")], 5)], "gap": 4,
                      "kind": "plain", "log_append": False}])
    _, fast = readers(data, 0, [])
    (rec,) = fast.take(5)
    assert type(rec) is ConsumerRecord
    assert (rec.offset, rec.key, rec.value, rec.headers, rec.timestamp) == (4, b"k", b'{"a":1}', [("h", b"v")], 5)
    assert (rec.serialized_key_size, rec.serialized_value_size, rec.serialized_header_size) == (1, 7, 2)


@pytest.mark.kafka
@pytest.mark.one_client
def test_the_source_reads_batches_and_gets_the_records_kafka_pythons_reader_gets(kafka_broker, fresh_topic):
    """Against a real broker: a default KafkaSource reads with the batch reader, one with
    ``record_reader: kafka-python`` with kafka-python's own, and both see the same records
    (values, keys, headers, offsets, timestamps) from two partitions."""
    from driftmon.source.kafka import KafkaSource
    from tests.conftest import consume, kafka_config, produce

    topic = fresh_topic(partitions=2)
    for p in range(2):
        produce(kafka_broker.bootstrap, topic, [f'{{"p": {p}, "i": {i}}}' for i in range(300)], partition=p)
        produce(kafka_broker.bootstrap, topic, [b"\x00raw", b""], partition=p, key=b"k\xff",
                headers=[("trace", b"\x01\x02"), ("empty", b"")])
    got = {}
    for reader in ("batch", "kafka-python"):
        src = KafkaSource(kafka_config(kafka_broker.bootstrap, record_reader=reader), [topic])
        try:
            fast = src._consumer._fetcher.PartitionRecords is not Fetcher.PartitionRecords
            assert fast == (reader == "batch")
            got[reader] = sorted(tuple(r) for r in consume(src, 604))
        finally:
            src.close()
    assert got["batch"] == got["kafka-python"]
    assert {(r[4], tuple(r[6])) for r in got["batch"] if r[4] is not None} == {
        (b"k\xff", (("trace", b"\x01\x02"), ("empty", b"")))}


@pytest.mark.parametrize(("log_append", "headers"), [(False, None), (True, None), (False, "some"), (False, "every")])
def test_a_well_formed_batch_is_read_by_columns_and_equals_kafka_python(log_append, headers, monkeypatch):
    """The usual batch goes the numpy way, not the loop: records with null and non-null keys
    and values, offsets and timestamps past one varint byte, and headers on some records, or
    on every record (then read column-wise too, not one record at a time)."""
    def hdrs(i):
        if headers == "every":
            return [("traceparent", b"00-%032x-01" % i), ("n", None if i % 2 else b"v" * (i % 200)), ("ключ", b"")]
        return [("traceparent", b"00-%032x-01" % i), ("n", None)] if headers and i % 5 == 0 else []

    if headers == "every":
        def one_at_a_time(*args):
            raise AssertionError("read one record at a time")
        monkeypatch.setattr(kafka_records, "_headers", one_at_a_time)

    recs = [(None if i % 3 else b"key%d" % i, None if i % 7 == 1 else b'{"i":%d}' % i, hdrs(i), 1000 * i)
            for i in range(500)]
    data, _ = build([{"magic": 2, "gzip": False, "records": recs, "gap": 200, "kind": "plain", "log_append": log_append}])
    batch = MemoryRecords(data).next_batch()
    batch._maybe_uncompress()
    cols = kafka_records._plain_columns(bytes(batch._buffer), batch._pos, batch._num_records,
                                        decode_varint, CorruptRecordError)
    assert cols is not None and (cols[2] + batch.base_offset).tolist() == list(range(200, 700))  # offsets
    assert (cols[-1] is not None) == bool(headers)
    if headers == "every":
        assert cols[-1][1][3] == [("traceparent", b"00-%032x-01" % 3), ("n", None), ("ключ", b"")]
    stock, fast = readers(data, 0, [])
    assert take_all(fast, [7, 300, None]) == take_all(stock, [7, 300, None])
