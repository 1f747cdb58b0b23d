"""Tests of driftmon.outputs.alerts."""
