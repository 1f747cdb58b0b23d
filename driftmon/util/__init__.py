"""Small helpers shared by several stages: atomic file writes, secret scrubbing and GC settings."""
