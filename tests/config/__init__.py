"""Tests of driftmon.config."""
