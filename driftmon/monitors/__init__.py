"""Monitors that span streams or entities, beside the per-stream pipelines.

A monitor (:class:`.base.Monitor`) is fed the prepared batches of the streams it
reads, emits results when its windows close, and snapshots/restores its state
for checkpoints.  :mod:`.calibration`: prediction calibration drift.
"""
