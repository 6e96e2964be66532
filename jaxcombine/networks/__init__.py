"""Layer 3: the pretrained networks: models, weights, their formats and fetching."""
