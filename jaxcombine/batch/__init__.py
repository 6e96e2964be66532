"""Layer 6: many jobs from a manifest, resumable."""
