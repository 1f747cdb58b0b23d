"""The source contract: what the service loop and replay need from an input.

A :class:`Source` hands out raw records in per-partition batches, in offset
order, and takes part in the checkpoint protocol: the caller counts the
records, checkpoints the state that counted them, and only then calls
:meth:`Source.commit` with the next offsets; after a restart it calls
:meth:`Source.seek` with the checkpointed offsets.  Decoding is a later
stage: a record's ``value`` is bytes.

Implementations: :class:`driftmon.source.kafka.KafkaSource` (a consumer-group
member) and :class:`driftmon.source.file.FileSource` (JSON lines from a file
or stdin, what ``driftmon replay`` reads).  A new input is one module with a
class that satisfies this protocol.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple, Protocol, runtime_checkable

Partition = tuple[str, int]  # (topic, partition)


class RecordLike(Protocol):
    """What any source's record has (kafka-python's ConsumerRecord, Record, LineRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class Record(NamedTuple):
    """One Kafka message as a Kafka source's ``poll()`` returns it; ``value`` is the raw
    bytes (decoding is a later stage)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


_VALUE = operator.attrgetter("value")


def values_of(records: Sequence[Any]) -> list[bytes]:
    """The raw values of one partition's batch (a batch may carry them ready-made
    as ``.values``, as the file source does; tombstones become ``b""``), without
    Schema Registry framing (:func:`unframed`)."""
    ready = getattr(records, "values", None)
    values = list(ready) if isinstance(ready, list) else list(map(_VALUE, records))
    if None in values:  # tombstones decode as invalid_json
        values = [b"" if v is None else v for v in values]
    return unframed(values)


FRAME_MAGIC = b"\x00"  # Confluent Schema Registry's wire format: this byte, ...
FRAME_BYTES = 5  # ... then a 4-byte schema id, then the serialized document
_unframe = operator.itemgetter(slice(FRAME_BYTES, None))


def unframed(values: list[bytes]) -> list[bytes]:
    """``values`` with Confluent Schema Registry framing taken off, where a value has it.

    Producers that use Confluent's ``KafkaJsonSchemaSerializer`` (and its librdkafka
    counterparts) write a 0 byte and a 4-byte schema id before each JSON document.  JSON
    never starts with a 0 byte, so a value that does is such a frame and loses its first
    5 bytes; every other value is left as it is (the list itself when none is framed).
    What follows a frame is decoded as JSON like any value: an Avro or Protobuf payload is
    ``invalid_json``.  Dead letters carry the record's original bytes, frame included.

    >>> unframed([b'\\x00\\x00\\x00\\x00\\x07{"a": 1}', b'{"a": 2}'])
    [b'{"a": 1}', b'{"a": 2}']
    """
    try:  # bytes sort bytewise, so a framed value is the smallest (b"" aside): one C-level min
        low = min(values, default=b"")
    except TypeError:  # not all bytes (str lines of a file, say): nothing is framed
        return values
    if not isinstance(low, bytes) or (low and low[:1] != FRAME_MAGIC):
        return values
    starts = list(map(bytes.startswith, values, repeat(FRAME_MAGIC)))  # framed values, or an empty one
    if True not in starts:
        return values
    if False not in starts:  # a framed topic: every value
        return list(map(_unframe, values))
    return [_unframe(v) if framed else v for v, framed in zip(values, starts)]  # a topic moving to framing


@runtime_checkable
class Source(Protocol):
    def poll_batches(self, timeout_ms: int | None = None) -> Mapping[Partition, Sequence[Any]]:
        """The next records, ``{(topic, partition): records in offset order}``; each
        record has ``topic, partition, offset, key, value, headers`` (``value``:
        raw bytes).  Empty when nothing arrived within ``timeout_ms``."""

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Record that everything before these next-offsets is durably counted."""

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Resume these partitions at these offsets (checkpointed state)."""

    def assignment(self) -> set[Partition]:
        """The partitions this source reads now."""

    def lag(self) -> dict[Partition, int]:
        """Records not yet read, per partition, where known."""

    def close(self) -> None: ...
