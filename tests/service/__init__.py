"""Tests of driftmon.service."""
