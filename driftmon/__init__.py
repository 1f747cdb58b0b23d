"""driftmon: streaming drift monitoring for recommender systems."""

__version__ = "0.1.0"
