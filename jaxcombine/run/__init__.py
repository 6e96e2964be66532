"""Layer 5: one run, planned and carried out: memory, outputs, interrupts."""
