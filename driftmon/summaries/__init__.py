"""Per-window summaries of feature values: count vectors that merge by addition."""
