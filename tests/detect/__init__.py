"""Tests of driftmon.detect."""
