"""Layer 4: the compiled optimisation: step, chunks, scales, tiles, device layout."""
