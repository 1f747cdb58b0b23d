"""A faster reader of record batches for driftmon's kafka-python consumers.

kafka-python parses every record of a fetch response in Python: one generator step, one
``DefaultRecord`` and seven ``decode_varint`` calls per record, about 51,000 CPU
instructions per record (``python bench/records.py --callgrind``).  That was the whole of
a bare kafka-python loop's cost and about two thirds of the daemon's.

:func:`install` gives one consumer's fetcher a subclass of kafka-python's own
``Fetcher.PartitionRecords`` that keeps what kafka-python decides per *batch* (CRC check,
aborted transactions, control batches, leader epochs, the next fetch offset after a
compacted batch, metrics) and reads the records of a v2 batch whole, handing them to
``poll()`` a batch at a time instead of a generator step per record:

* a well-formed batch of 16 records or more (the usual case) column-wise: one Python loop
  walks the chain of length-prefixed records, numpy decodes every other varint of all
  records at once, and C-level maps slice the values from one ``bytes`` copy of the batch
  and build the records; headers too, per group of records with the same number of them
  (a key or value every record shares is one object; more than four groups: one record at a
  time). About 7,800 instructions per record without headers, 14,400 with a ``traceparent``
  and one shared header each;
* any other batch, including every malformed one, record by record with kafka-python's
  varint decoder, raising kafka-python's errors after the records before the damage.

The records are kafka-python's own ``ConsumerRecord`` tuples with every field the same
(``tests/source/test_kafka_records.py`` compares both readers record by record with
hypothesis: keys, headers, nulls, gzip, offset gaps, transactions, control batches,
log-append time, ``take(n)`` sequences and bytes damaged anywhere).

It is used only where it is exactly kafka-python's behaviour: kafka-python 3.0.x
(:data:`KAFKA_PYTHON_SERIES`; ``PartitionRecords`` with this constructor and ``take``,
``ConsumerRecord`` with these fields) and no key or value deserializer.  A newer
kafka-python keeps its own reader until this module is checked against it (the test suite
fails, rather than skips, when the installed one is not supported).  Legacy (v0/v1) message sets are read record by
record as kafka-python reads them.  Anything else, or ``kafka.record_reader: kafka-python``,
keeps kafka-python's reader (docs/kafka.md).
"""

from __future__ import annotations

import inspect
import logging
from itertools import repeat
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CONSUMER_RECORD_FIELDS = (
    "topic", "partition", "leader_epoch", "offset", "timestamp", "timestamp_type", "key", "value",
    "headers", "checksum", "serialized_key_size", "serialized_value_size", "serialized_header_size",
)
PARTITION_RECORDS_INIT = (
    "self", "fetch_offset", "tp", "records", "key_deserializer", "value_deserializer", "check_crcs",
    "isolation_level", "aborted_transactions", "metric_aggregator", "on_drain",
)
KAFKA_PYTHON_SERIES = "3.0."  # the releases whose PartitionRecords this was written against and tested with
LOG_APPEND_TIME = 1
MIN_COLUMN_BATCH = 16  # records; a smaller batch is read by the loop (numpy's set-up costs more)
MAX_COLUMN_HEADERS = 64  # headers per record read column-wise (more: one record at a time)
MAX_HEADER_GROUPS = 4  # distinct header counts in a batch read column-wise (more: one record at a time)
MAX_SHARED_BYTES = 64  # a header key or value up to this long, the same in every record, is one object
_classes: dict[type, type] = {}


def _imports() -> tuple[Any, ...] | None:
    """kafka-python's pieces this reader relies on, or None when they are not as expected."""
    try:
        from kafka import __version__ as version
        from kafka.consumer.fetcher import ConsumerRecord, Fetcher
        from kafka.errors import CorruptRecordError
        from kafka.record.util import decode_varint
    except ImportError:  # pragma: no cover - kafka-python 2.x moved nothing of this, but be safe
        return None
    if not str(version).startswith(KAFKA_PYTHON_SERIES):  # the per-batch logic copied here is this series'
        return None
    base = getattr(Fetcher, "PartitionRecords", None)
    if (base is None or tuple(getattr(ConsumerRecord, "_fields", ())) != CONSUMER_RECORD_FIELDS
            or not all(hasattr(base, m) for m in ("take", "drain", "_unpack_records", "_consume_aborted_transactions_up_to",
                                                   "_contains_abort_marker", "_is_batch_aborted",
                                                   "_maybe_raise_next_inline_exception"))):
        return None
    if tuple(inspect.signature(base.__init__).parameters) != PARTITION_RECORDS_INIT:
        return None
    return Fetcher, base, ConsumerRecord, CorruptRecordError, decode_varint


def supported() -> bool:
    """Whether the installed kafka-python can use this reader."""
    return _imports() is not None


def install(consumer: Any) -> bool:
    """Give ``consumer``'s fetcher the fast record reader (this consumer only).  Returns
    whether it was installed (False: kafka-python's own reader stays)."""
    parts = _imports()
    fetcher = getattr(consumer, "_fetcher", None)
    if parts is None or fetcher is None:
        return False
    fetcher_cls, base = parts[0], parts[1]
    if not isinstance(fetcher, fetcher_cls) or getattr(fetcher, "config", {}).get("key_deserializer") is not None \
            or fetcher.config.get("value_deserializer") is not None:
        return False
    fetcher.PartitionRecords = partition_records_class(base)
    return True


def partition_records_class(base: type) -> type:
    """The subclass of kafka-python's ``Fetcher.PartitionRecords`` that reads batches whole."""
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = _make_class(base)
    return cls


def _make_class(base: type) -> type:
    parts = _imports()
    assert parts is not None
    _, _, consumer_record, corrupt, decode_varint = parts
    from kafka.consumer.fetcher import IsolationLevel

    read_committed = IsolationLevel.READ_COMMITTED
    new = tuple.__new__

    def read_v2(batch: Any, buf: bytes, topic: str, partition: int, epoch: int
                ) -> tuple[list[Any], int, Exception | None]:
        """The records of a (CRC-checked, non-control) v2 batch, ``buf`` its decompressed bytes
        (the copy :func:`read_v2_columns` made), as ConsumerRecords, their total size in bytes, and the error that stopped the reading, if any (the records
        before it are returned, as kafka-python yields them before raising)."""
        out: list[Any] = []
        append = out.append
        size = 0
        try:
            pos = batch._pos
            base_offset = batch.base_offset
            tstype = batch.timestamp_type
            first_ts = batch.first_timestamp
            fixed_ts = batch.max_timestamp if tstype == LOG_APPEND_TIME else None
            for _ in range(batch._num_records):
                # Record => Length Attributes TimestampDelta OffsetDelta Key Value Headers (zigzag varints)
                length, pos = decode_varint(buf, pos)
                start = pos
                _, pos = decode_varint(buf, pos)  # attributes: unused
                ts_delta, pos = decode_varint(buf, pos)
                offset_delta, pos = decode_varint(buf, pos)
                key, key_size, pos = _nullable_bytes(buf, pos, decode_varint)
                value, value_size, pos = _nullable_bytes(buf, pos, decode_varint)
                if buf[pos] == 0:  # no headers
                    headers: list[Any] = []
                    header_size = -1
                    pos += 1
                else:
                    headers, header_size, pos = _headers(buf, pos, decode_varint, corrupt)
                if pos - start != length:
                    raise corrupt(f"Invalid record size: expected to read {length} bytes in record "
                                  f"payload, but instead read {pos - start}")
                size += length
                append(new(consumer_record, (
                    topic, partition, epoch, base_offset + offset_delta,
                    first_ts + ts_delta if fixed_ts is None else fixed_ts, tstype,
                    key, value, headers, None, key_size, value_size, header_size)))
            if pos != len(buf):
                raise corrupt(f"{len(buf) - pos} unconsumed bytes after all records consumed")
        except corrupt as exc:
            return out, size, exc
        except (ValueError, IndexError) as exc:
            return out, size, corrupt(f"Found invalid record structure: {exc!r}")
        return out, size, None

    def read_v2_columns(batch: Any, topic: str, partition: int, epoch: int) -> tuple[list[Any], int, Exception | None]:
        """:func:`read_v2` for a batch of 16 records or more whose records are all well formed
        with one-byte attributes and varints of at most 5 bytes: the fields of all records at
        once with numpy (headers record by record, for the records that have them), the records
        built by C-level maps.  Any other batch, including every malformed one, is read by
        :func:`read_v2` (kafka-python's errors)."""
        batch._maybe_uncompress()
        raw = bytes(batch._buffer)
        n = batch._num_records
        cols = _plain_columns(raw, batch._pos, n, decode_varint, corrupt) if n >= MIN_COLUMN_BATCH else None
        if cols is None:
            return read_v2(batch, raw, topic, partition, epoch)
        size, ts_delta, offset_delta, key_start, key_size, value_start, value_size, rich = cols
        batch._pos = len(raw)
        offsets = (offset_delta + batch.base_offset).tolist()
        tstype = batch.timestamp_type
        if tstype == LOG_APPEND_TIME:
            timestamps: Any = repeat(batch.max_timestamp, n)
        else:
            timestamps = (ts_delta + batch.first_timestamp).tolist()
        getitem = raw.__getitem__
        vs = value_size.tolist()
        if value_size.min() >= 0:
            values: Any = map(getitem, map(slice, value_start.tolist(), (value_start + value_size).tolist()))
        else:
            values = [None if v < 0 else raw[a:a + v] for a, v in zip(value_start.tolist(), vs)]
            vs = [max(v, -1) for v in vs]
        if key_size.max() < 0:
            keys: Any = repeat(None, n)
            ks: Any = repeat(-1, n)
        else:
            ks = key_size.tolist()
            keys = [None if k < 0 else raw[a:a + k] for a, k in zip(key_start.tolist(), ks)]
            ks = [max(k, -1) for k in ks]
        headers: Any = map(list, repeat((), n))  # a list of its own per record, as kafka-python's
        header_sizes: Any = repeat(-1, n)
        if rich is not None:
            at, lists, sizes = rich
            if len(at) == n:  # every record has headers (the usual case when a producer sets any)
                headers, header_sizes = lists, sizes
            else:
                headers, header_sizes = list(headers), [-1] * n
                for i, hs, hsize in zip(at, lists, sizes):
                    headers[i], header_sizes[i] = hs, hsize
        out = list(map(new, repeat(consumer_record, n), zip(
            repeat(topic, n), repeat(partition, n), repeat(epoch, n), offsets, timestamps, repeat(tstype, n),
            keys, values, headers, repeat(None, n), ks, vs, header_sizes)))
        return out, int(size), None

    class FastPartitionRecords(base):  # type: ignore[misc, valid-type]
        """kafka-python's ``PartitionRecords``, reading whole v2 batches (module docstring)."""

        def __init__(self, fetch_offset: int, tp: Any, records: Any, key_deserializer: Any = None,
                     value_deserializer: Any = None, check_crcs: bool = True, isolation_level: Any = None,
                     aborted_transactions: Any = None, metric_aggregator: Any = None,
                     on_drain: Any = lambda x: None) -> None:
            kw: dict[str, Any] = {"key_deserializer": key_deserializer, "value_deserializer": value_deserializer,
                                  "check_crcs": check_crcs, "aborted_transactions": aborted_transactions,
                                  "metric_aggregator": metric_aggregator, "on_drain": on_drain}
            if isolation_level is not None:
                kw["isolation_level"] = isolation_level
            super().__init__(fetch_offset, tp, records, **kw)
            self._whole = key_deserializer is None and value_deserializer is None
            if self._whole:  # (the stock generator built above is never started)
                self.record_iterator = self._batches(tp, records)
                self._pending: list[Any] = []

        def take(self, n: int | None = None) -> list[Any]:
            if not self._whole:
                return super().take(n)
            self._maybe_raise_next_inline_exception()
            out: list[Any] = []
            want = n
            while want is None or want > 0:
                pending = self._pending
                if pending:
                    got = pending if want is None or want >= len(pending) else pending[:want]
                    self._pending = [] if got is pending else pending[want:]
                    out.extend(got)
                    self.next_fetch_offset = got[-1][3] + 1  # as kafka-python sets it per record it yields
                    if want is not None:
                        want -= len(got)
                    continue
                it = self.record_iterator
                if it is None:
                    break
                try:
                    chunk = next(it, None)
                except Exception as e:  # noqa: BLE001 - kafka-python's take(): raise now, or after what was read
                    if not out:
                        raise
                    self._next_inline_exception = e
                    break
                if chunk is None:
                    break
                self._pending = chunk
            return out

        def drain(self) -> None:
            self._pending = []
            super().drain()

        def _batches(self, tp: Any, records: Any) -> Any:
            """kafka-python's ``_unpack_records``, yielding a batch's records as one list."""
            topic, partition, fetch_offset = tp.topic, tp.partition, self.fetch_offset
            dropping = True
            try:
                batch = records.next_batch()
                last_batch = None
                while batch is not None:
                    last_batch = batch
                    if self.check_crcs and not batch.validate_crc():
                        raise corrupt(f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check")
                    if batch.magic == 2:
                        self.leader_epoch = batch.leader_epoch
                        if self.isolation_level == read_committed and batch.has_producer_id():
                            self._consume_aborted_transactions_up_to(batch.last_offset)
                            producer_id = batch.producer_id
                            if self._contains_abort_marker(batch):
                                self.aborted_producer_ids.discard(producer_id)
                            elif self._is_batch_aborted(batch):
                                log.debug("Skipping aborted record batch from partition %s with producer_id %s"
                                          " and offsets %s to %s", self.topic_partition, producer_id,
                                          batch.base_offset, batch.last_offset)
                                self.next_fetch_offset = batch.next_offset
                                batch = records.next_batch()
                                continue
                        if batch.is_control_batch:
                            self.next_fetch_offset = batch.next_offset
                            batch = records.next_batch()
                            continue
                        chunk, size, error = read_v2_columns(batch, topic, partition, self.leader_epoch)
                    else:
                        chunk, size, error = self._legacy(batch, topic, partition)
                    self.records_read += len(chunk)
                    self.bytes_read += size
                    if dropping and chunk:  # records before the fetch offset (a compressed batch that starts
                        # before it), up to the first one at or after it: kafka-python's dropwhile
                        k = 0
                        while k < len(chunk) and chunk[k][3] < fetch_offset:
                            k += 1
                        if k:
                            self.next_fetch_offset = chunk[k - 1][3] + 1  # (kafka-python sets it for these too)
                            chunk = chunk[k:]
                        dropping = not chunk
                    if chunk:
                        yield chunk
                    if error is not None:
                        raise error
                    batch = records.next_batch()
                else:
                    if last_batch and last_batch.magic == 2:
                        self.next_fetch_offset = last_batch.next_offset
                    self.drain()
            except StopIteration:  # as kafka-python (its issue 545)
                log.exception("StopIteration raised unpacking messageset")
                raise RuntimeError("StopIteration raised unpacking messageset") from None

        def _legacy(self, batch: Any, topic: str, partition: int) -> tuple[list[Any], int, Exception | None]:
            """A v0/v1 message set, record by record as kafka-python reads it."""
            out: list[Any] = []
            size = 0
            try:
                for record in batch:
                    if self.check_crcs and not record.validate_crc():
                        raise corrupt(f"Record for partition {self.topic_partition} at offset {record.offset} failed crc check")
                    key, value, headers = record.key, record.value, record.headers
                    header_size = sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0)
                                      for k, v in headers) if headers else -1
                    size += record.size_in_bytes
                    out.append(consumer_record(
                        topic, partition, self.leader_epoch, record.offset, record.timestamp,
                        record.timestamp_type, key, value, headers, record.checksum,
                        len(key) if key is not None else -1, len(value) if value is not None else -1,
                        header_size))
            except Exception as exc:  # noqa: BLE001 - handed to take() after the records before it
                return out, size, exc
            return out, size, None

    FastPartitionRecords.__qualname__ = FastPartitionRecords.__name__
    return FastPartitionRecords


def _plain_columns(raw: bytes, pos: int, n: int, decode_varint: Any, corrupt: type) -> tuple[Any, ...] | None:
    """The fields of ``n`` records from ``pos`` in ``raw``, if every record is well formed with
    one-byte attributes and varints of at most 5 bytes, and the records fill ``raw`` exactly;
    else None.  Returns the records' total size and, per record, timestamp delta, offset delta,
    key start and size, value start and size (-1 or less: null), and the headers and their
    size of the records that have any ({index: (headers, size)}; None if no record has)."""
    starts: list[int] = []
    lengths: list[int] = []
    add_start, add_length = starts.append, lengths.append
    try:
        for _ in range(n):  # the records are a chain of length-prefixed bodies: walk it
            c = raw[pos]
            if c < 0x80:
                length = (c >> 1) ^ -(c & 1)
                pos += 1
            else:
                d = raw[pos + 1]
                if d >= 0x80:
                    return None
                v = (c & 0x7F) | (d << 7)
                length = (v >> 1) ^ -(v & 1)
                pos += 2
            add_start(pos)
            add_length(length)
            pos += length
    except IndexError:
        return None
    if pos != len(raw) or n == 0:
        return None
    u = np.frombuffer(raw, dtype=np.uint8)
    start = np.array(starts, dtype=np.int64)
    end = start + np.array(lengths, dtype=np.int64)  # each body's end: the next length varint
    if (end <= start).any() or (u.take(start, mode="clip") >= 0x80).any():  # attributes: one byte
        return None
    p = start + 1
    ts_delta, p = _varints(u, p)
    if ts_delta is None:
        return None
    offset_delta, p = _varints(u, p)
    if offset_delta is None:
        return None
    key_size, p = _varints(u, p)
    if key_size is None:
        return None
    key_start = p
    p = p + np.maximum(key_size, 0)
    value_size, p = _varints(u, p)
    if value_size is None:
        return None
    value_start = p
    p = p + np.maximum(value_size, 0)
    # the headers: a zero byte (none), or read column-wise per header count (one record at a time
    # if that fails); the body ends right after them
    count = u.take(np.minimum(p, len(raw) - 1))
    plain = count == 0
    headers: tuple[list[int], list[list[Any]], list[int]] | None = None
    if plain.all():
        if not np.array_equal(p + 1, end):
            return None
    else:
        if not np.array_equal((p + 1)[plain], end[plain]):
            return None
        rich = ~plain
        at, stop = p[rich], end[rich]
        try:
            got = _header_groups(raw, u, at, stop, count[rich])
            if got is None:
                lists, sizes = [], []
                for pos, last in zip(at.tolist(), stop.tolist()):
                    hs, hsize, after = _headers(raw, pos, decode_varint, corrupt)
                    if after != last:
                        return None
                    lists.append(hs)
                    sizes.append(hsize)
                got = lists, sizes
        except Exception:  # noqa: BLE001 - the loop reads this batch and raises kafka-python's error
            return None
        headers = (np.flatnonzero(rich).tolist(), *got)
    return (int(end.sum() - start.sum()), ts_delta, offset_delta, key_start, key_size, value_start, value_size,
            headers)


def _header_groups(raw: bytes, u: np.ndarray, at: np.ndarray, stop: np.ndarray,
                   first: np.ndarray) -> tuple[list[Any], list[int]] | None:
    """:func:`_header_columns` of each group of records with the same header count (``first``:
    the first byte of each record's count; at most :data:`MAX_HEADER_GROUPS` groups, e.g. the
    records a tracer sampled carry one header more), in record order; None as it gives."""
    if (first == first[0]).all():  # (the usual case)
        return _header_columns(raw, u, at, stop)
    counts = np.flatnonzero(np.bincount(first))  # (np.unique of uint8 costs ~1,000 instructions a value)
    if counts.size > MAX_HEADER_GROUPS:
        return None
    lists: list[Any] = [None] * at.size
    sizes: list[int] = [0] * at.size
    for c in counts.tolist():
        sel = np.flatnonzero(first == c)
        got = _header_columns(raw, u, at[sel], stop[sel])
        if got is None:
            return None
        for i, hs, size in zip(sel.tolist(), *got):
            lists[i] = hs
            sizes[i] = size
    return lists, sizes


def _header_columns(raw: bytes, u: np.ndarray, at: np.ndarray, stop: np.ndarray) -> tuple[list[Any], list[int]] | None:
    """The headers of records whose header sections are ``raw[at[i]:stop[i]]``, read column-wise
    (one C-level pass per header field), when every one has the same number of headers, at most
    :data:`MAX_COLUMN_HEADERS`; else None (the caller reads them one record at a time).  Per record,
    a list of ``(key, value)`` and the size kafka-python reports (keys' and values' bytes); None
    too where anything is malformed, for :func:`_headers` to raise kafka-python's error.  A key
    that is not UTF-8 raises ``UnicodeDecodeError``."""
    count, q = _varints(u, at)
    if count is None:
        return None
    c = int(count[0])
    if not 0 < c <= MAX_COLUMN_HEADERS or not (count == c).all():
        return None
    getitem = raw.__getitem__
    m = at.size
    columns: list[list[tuple[str, bytes | None]]] = []
    size = np.zeros(m, dtype=np.int64)
    for _ in range(c):
        key_size, q = _varints(u, q)
        if key_size is None or key_size.min() < 0:
            return None
        key_end = q + key_size
        value_size, value_start = _varints(u, key_end)
        if value_size is None:
            return None
        value_end = value_start + np.maximum(value_size, 0)
        if (value_end > stop).any():  # (and so every key ends before it)
            return None
        key = _shared(raw, u, q, key_size)  # (a header's key is usually the same in every record)
        keys: Any = repeat(key.decode(), m) if key is not None else \
            map(bytes.decode, map(getitem, map(slice, q.tolist(), key_end.tolist())))
        null = value_size < 0
        value = None if null.any() else _shared(raw, u, value_start, value_size)
        values: Any
        if null.all():
            values = repeat(None, m)
        elif value is not None:
            values = repeat(value, m)
        else:
            values = list(map(getitem, map(slice, value_start.tolist(), value_end.tolist())))
            for i in np.flatnonzero(null).tolist():
                values[i] = None
        columns.append(list(zip(keys, values)))
        size += key_size + np.maximum(value_size, 0)
        q = value_end
    if not np.array_equal(q, stop):
        return None
    return list(map(list, zip(*columns))), size.tolist()


def _shared(raw: bytes, u: np.ndarray, start: np.ndarray, size: np.ndarray) -> bytes | None:
    """The bytes ``raw[start[i]:start[i] + size[i]]`` if they are the same for every ``i`` and at
    most :data:`MAX_SHARED_BYTES` long (one object then serves every record: bytes and str are
    immutable), else None."""
    n = int(size[0])
    if not 0 <= n <= MAX_SHARED_BYTES or not (size == n).all():
        return None
    first = raw[int(start[0]):int(start[0]) + n]
    if n and not (u[start[:, None] + np.arange(n)] == np.frombuffer(first, dtype=np.uint8)).all():
        return None
    return first


def _varints(u: np.ndarray, p: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Zigzag varints of at most 5 bytes at positions ``p`` of ``u`` (None if one is longer),
    and the positions after them."""
    b = u.take(p, mode="clip").astype(np.int64)
    more = b >= 0x80
    v = b & 0x7F
    size = np.ones_like(p)
    for k in range(1, 5):
        if not more.any():
            break
        b = u.take(p + k, mode="clip").astype(np.int64)
        v |= ((b & 0x7F) << (7 * k)) * more
        size += more
        more &= b >= 0x80
    else:
        if more.any():
            return None, p
    return (v >> 1) ^ -(v & 1), p + size


def _nullable_bytes(buf: bytes, pos: int, decode_varint: Any) -> tuple[bytes | None, int, int]:
    """A length-prefixed byte string (a negative length: null): the bytes, their size as
    kafka-python reports it (``len``, -1 for null) and the position after them."""
    size, pos = decode_varint(buf, pos)
    if size < 0:
        return None, -1, pos
    data = buf[pos:pos + size]
    return data, len(data), pos + size


def _headers(buf: bytes, pos: int, decode_varint: Any, corrupt: type) -> tuple[list[Any], int, int]:
    """A record's headers (kafka-python's checks and sizes)."""
    count, pos = decode_varint(buf, pos)
    if count < 0:
        raise corrupt(f"Found invalid number of record headers {count}")
    headers: list[tuple[str, bytes | None]] = []
    size = 0
    while count:
        klen, pos = decode_varint(buf, pos)
        if klen < 0:
            raise corrupt(f"Invalid negative header key size {klen}")
        raw = buf[pos:pos + klen]
        hkey = raw.decode("utf-8")
        pos += klen
        vlen, pos = decode_varint(buf, pos)  # (inline: the column path reads every header here)
        if vlen >= 0:
            data = buf[pos:pos + vlen]
            pos += vlen
            size += len(raw) + len(data)
            headers.append((hkey, data))
        else:
            size += len(raw)
            headers.append((hkey, None))
        count -= 1
    return headers, size if headers else -1, pos
