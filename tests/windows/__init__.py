"""Tests of driftmon.windows."""
