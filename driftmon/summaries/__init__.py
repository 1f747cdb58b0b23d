"""Per-window summaries of feature values: count vectors that merge by addition.

Every summary is a commutative monoid whose value depends only on the
multiset of events it counted (:mod:`.base` states the contract).  Bins are
chosen when two windows are compared, from their pooled summaries.

* :mod:`.categorical`: open vocabularies (``top_k`` features): exact counts
  for up to ``max_values`` values, chosen by stable hash, plus a hashed tail;
* :mod:`.numeric`: quantile features (``bins: quantile``): a log-linear
  bucket grid with a stated relative accuracy, plus exact moments;
* :mod:`.fixed`: declared ``categories``/``edges`` (:mod:`.bins`): dense counts.
"""

from __future__ import annotations

from driftmon.config import FeatureConfig
from driftmon.summaries.base import Summarizer, Summary
from driftmon.summaries.bins import CategoricalSpec, NumericSpec
from driftmon.summaries.categorical import CategoricalSummarizer, CategoricalSummary
from driftmon.summaries.fixed import FixedSummarizer, FixedSummary
from driftmon.summaries.numeric import NumericSummarizer, NumericSummary

__all__ = ["CategoricalSummarizer", "CategoricalSummary", "FixedSummarizer", "FixedSummary", "NumericSummarizer",
           "NumericSummary", "Summarizer", "Summary", "summarizer_for"]


def summarizer_for(f: FeatureConfig) -> Summarizer:
    """The summary kind of one configured feature."""
    if f.categories is not None:
        return FixedSummarizer(CategoricalSpec(f.categories))
    if f.edges is not None:
        return FixedSummarizer(NumericSpec(f.edges))
    if f.top_k is not None:
        return CategoricalSummarizer(f.top_k, cap=max(f.max_values, f.top_k))
    return NumericSummarizer(f.num_bins or 10, f.relative_accuracy)
