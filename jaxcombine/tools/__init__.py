"""Layer 6: bench, eval (metrics), features."""
