"""Small helpers shared by several stages: atomic file writes and secret scrubbing."""
