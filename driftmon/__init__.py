"""driftmon: streaming drift monitoring for recommender systems.

The monitor is the ``driftmon`` command (``run``, ``replay``, ``validate-config``).
The Python API for arrays is :func:`kldiv` (:mod:`driftmon.arrays`): the KL
divergence of many distributions at once, like MATLAB's ``kldiv.m``.
"""

from driftmon.arrays import kldiv

__all__ = ["__version__", "kldiv"]

__version__ = "0.1.0"
