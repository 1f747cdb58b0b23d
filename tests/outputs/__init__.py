"""Tests of driftmon.outputs."""
