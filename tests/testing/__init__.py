"""Tests of driftmon.testing."""
