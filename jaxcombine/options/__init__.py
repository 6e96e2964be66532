"""Layer 1: what a run is asked to do. Configuration, validation rules, recipes and the
networks' layer tables; imports no JAX."""
