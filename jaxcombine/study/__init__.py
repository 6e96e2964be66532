"""Layer 6: convergence studies across starts."""
