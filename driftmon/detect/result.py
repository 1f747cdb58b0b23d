"""The detector's output record: one per (stream, feature, segment, closed window).

``DriftResult.to_dict()`` is the wire shape shared by ``driftmon replay
--format json``, the results sinks, metrics and webhooks.

Its size is bounded: every bin label (``bins`` and ``top_bins[].bin``) and the
segment have at most :data:`MAX_LABEL_CHARS` characters (event values are
already cut to that length by the decoder; a longer declared category is
shown as its first 246 characters, "…#" and 8 hex digits of its SHA-256, so
two long labels stay distinct), ``bins``/``counts`` have ``top_k + 2`` entries
(or the declared bins) and ``top_bins`` has ``detector.top_bins`` entries.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

MAX_LABEL_CHARS = 256  # bin labels and segments in results, rows and webhook payloads

_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def json_line(doc: Any) -> bytes:
    """One JSON document as one line (newline included).  NEL, LINE SEPARATOR and
    PARAGRAPH SEPARATOR inside strings are escaped, since readers that split
    on Unicode line breaks (``str.splitlines``) would otherwise cut the line."""
    data = orjson.dumps(doc)
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data + b"\n"


def cap_label(label: str) -> str:
    """``label`` if it has at most :data:`MAX_LABEL_CHARS` characters, else a distinct shorter form."""
    if len(label) <= MAX_LABEL_CHARS:
        return label
    digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{label[:MAX_LABEL_CHARS - 10]}\u2026#{digest}"


def _cap_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    if not labels or max(map(len, labels)) <= MAX_LABEL_CHARS:
        return labels
    return tuple(map(cap_label, labels))


def rfc3339(ts: float | None) -> str | None:
    """Epoch seconds -> RFC 3339 UTC with millisecond precision ("...Z")."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def json_number(x: float | None) -> float | str | None:
    """JSON has no infinity: +inf is written as the string "inf"."""
    if x is None:
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        return None
    return float(x)


@dataclass(frozen=True)
class BinShare:
    """One bin's part in a divergence: its share before (reference) and after
    (current) and its contribution to the divergence, in the result's unit."""

    bin: str
    p_reference: float
    p_current: float
    contribution: float

    def __post_init__(self) -> None:
        if len(self.bin) > MAX_LABEL_CHARS:
            object.__setattr__(self, "bin", cap_label(self.bin))

    def to_dict(self) -> dict[str, Any]:
        return {
            "bin": self.bin,
            "p_reference": round(self.p_reference, 6),
            "p_current": round(self.p_current, 6),
            "contribution": json_number(self.contribution),
        }


@dataclass(frozen=True)
class HorizonResult:
    """One comparison of the closed window with one reference (a *horizon*):
    ``previous`` (the latest earlier window that does not overlap), ``pinned``
    or ``lagN`` (the window N windows back).  ``effect`` is the divergence less
    the share sampling noise explains (:func:`driftmon.detect.detector.effect`),
    ``p_adjusted`` the Benjamini-Hochberg adjusted p-value over all tests of the
    closed window, ``unusual_z`` the robust z of the effect
    against this series' and horizon's own history (null until enough is kept),
    ``state`` this comparison's level (ok | warn | critical | no_reference |
    insufficient_data)."""

    reference: str
    n_reference: int
    divergence: float | None
    effect: float | None
    p_value: float | None
    p_adjusted: float | None
    unusual_z: float | None
    state: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "n_reference": self.n_reference,
            "divergence": json_number(self.divergence),
            "effect": json_number(self.effect),
            "p_value": json_number(self.p_value),
            "p_adjusted": json_number(self.p_adjusted),
            "unusual_z": json_number(self.unusual_z),
            "state": self.state,
        }


@dataclass(frozen=True)
class DriftResult:
    stream: str
    feature: str
    segment: str | None
    window_start: float | None  # epoch seconds (first event time for count windows)
    window_end: float | None
    metric: str
    unit: str
    divergence: float | None
    p_value: float | None
    n_current: int
    n_reference: int
    state: str
    transition: str
    top_bins: tuple[BinShare, ...] = ()
    warn_threshold: float = 0.0
    critical_threshold: float = 0.0
    severity: str | None = None  # severity of the active alert (warning|critical), or the one resolved now
    counts: tuple[int, ...] = field(default=(), repr=False)  # the current window's histogram
    bins: tuple[str, ...] = field(default=(), repr=False)  # bin labels for ``counts``
    smoothing: str = "additive(alpha=0.5)"
    p_value_method: str | None = None  # "chi2" | "permutation"
    # scale-out: the source partitions missing from a window emitted at its timeout (None: complete)
    partial: tuple[str, ...] | None = None
    design_effect: float | None = None  # streams[].cluster_by: the Rao-Scott design effect the p-value used
    # the headline comparison's effect (divergence minus plug-in bias), BH-adjusted p-value, robust z
    effect: float | None = None
    p_adjusted: float | None = None
    unusual_z: float | None = None
    tests: int = 0  # how many tests the closed window ran (features x segments x horizons): BH's family
    horizon: str = "previous"  # the reference whose comparison set ``state`` (the headline's unless another is higher)
    horizons: tuple[HorizonResult, ...] = ()  # every comparison of this window, the headline first

    def __post_init__(self) -> None:
        bins = _cap_labels(tuple(self.bins))
        if bins is not self.bins:
            object.__setattr__(self, "bins", bins)
        if self.segment is not None and len(self.segment) > MAX_LABEL_CHARS:
            object.__setattr__(self, "segment", cap_label(self.segment))

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.stream, self.feature, self.segment)

    def to_dict(self) -> dict[str, Any]:
        d = self._to_dict()
        if self.partial is not None:  # only rows of scale-out windows emitted incomplete
            d["partial"] = True
            d["missing_partitions"] = list(self.partial)
        return d

    def _to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "feature": self.feature,
            "segment": self.segment,
            "window_start": rfc3339(self.window_start),
            "window_end": rfc3339(self.window_end),
            "metric": self.metric,
            "unit": self.unit,
            "divergence": json_number(self.divergence),
            "p_value": json_number(self.p_value),
            "p_value_method": self.p_value_method,
            "design_effect": json_number(self.design_effect),
            "effect": json_number(self.effect),
            "p_adjusted": json_number(self.p_adjusted),
            "unusual_z": json_number(self.unusual_z),
            "tests": self.tests,
            "horizon": self.horizon,
            "horizons": [h.to_dict() for h in self.horizons],
            "smoothing": self.smoothing,
            "n_current": self.n_current,
            "n_reference": self.n_reference,
            "state": self.state,
            "transition": self.transition,
            "severity": self.severity,
            "warn_threshold": self.warn_threshold,
            "critical_threshold": self.critical_threshold,
            "top_bins": [b.to_dict() for b in self.top_bins],
            "bins": list(self.bins),
            "counts": list(self.counts),
        }
