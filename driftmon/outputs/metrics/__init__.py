"""Prometheus metrics: the single source of truth for driftmon's metric names.

Every series driftmon exports is declared in :mod:`.families` (name, help,
labels, buckets), and ``METRIC_NAMES`` lists the exposed sample names.  The
dashboard and the alerting rules under ``deploy/`` may only use these names
(``tests/e2e/test_deploy.py`` checks it), so renaming a metric there breaks the
tests before it breaks an operator.  ``SCALE_METRIC_NAMES`` lists the series
exported only in scale-out mode (``Metrics.init_scale``).

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never the global
one), so tests and embedded uses can create as many as they like.  The
daemon's HTTP module serves ``Metrics.registry`` / ``Metrics.render()``.

Labels are bounded: stream, feature and segment come from the config (the
segment count is capped upstream by ``max_segments``); reject reasons and
webhook outcomes are small fixed vocabularies chosen by the code, never by
event contents.  The overall (unsegmented) series has ``segment=""``, which
Prometheus stores as "no segment label"; a segmented series never has that
value (an empty segment value is ``__empty__``, see
:func:`driftmon.vocabulary.segment_label`).

One job per module, like prometheus_client's own layout (this ``__init__``
only re-exports, with the package's one ``__all__``):

* :mod:`.families`: the vocabulary, every metric family's definition and the
  values some of them take (alert states, entity-divergence buckets);
* :mod:`.collectors`: the custom collector behind the entity-divergence histogram;
* :mod:`.results`, :mod:`.ingest`, :mod:`.monitors`, :mod:`.delivery`,
  :mod:`.scale`: the updaters of one area each (detector results and alerts;
  ingest and the Kafka source; entity and calibration monitors; webhooks,
  outputs and dead letters; scale-out);
* :mod:`.facade`: :class:`Metrics`, the one object the rest of driftmon uses.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from driftmon.outputs.metrics.facade import Metrics
from driftmon.outputs.metrics.families import METRIC_NAMES, SCALE_METRIC_NAMES
from driftmon.outputs.metrics.results import alert_state_value

__all__ = [
    "CONTENT_TYPE_LATEST",
    "METRIC_NAMES",
    "SCALE_METRIC_NAMES",
    "Metrics",
    "alert_state_value",
]
