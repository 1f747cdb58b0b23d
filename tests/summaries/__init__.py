"""Tests of driftmon.summaries."""
