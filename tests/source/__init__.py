"""Tests of driftmon.source."""
