"""Tests of driftmon.decode."""
