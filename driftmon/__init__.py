"""driftmon: streaming drift monitoring for recommender systems.

The monitor is the ``driftmon`` command (``run``, ``replay``, ``validate-config``).
The Python API for arrays is :func:`kldiv` (:mod:`driftmon.arrays`): the KL
divergence of many distributions at once, like MATLAB's ``kldiv.m``.

``kldiv`` is imported on first use, so ``import driftmon`` (which every
``driftmon`` command does before installing its signal handlers) stays free of
numpy and scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftmon.arrays import kldiv

__all__ = ["__version__", "kldiv"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "kldiv":
        from driftmon.arrays import kldiv

        return kldiv
    raise AttributeError(f"module 'driftmon' has no attribute {name!r}")
