"""A source partition, as every scale-out record names it."""

from __future__ import annotations

Source = tuple[str, int]  # (event topic, partition)


class FromSource:
    """A record from one source partition: its ``topic`` and ``partition`` fields make ``source``."""

    topic: str
    partition: int

    @property
    def source(self) -> Source:
        return (self.topic, self.partition)
