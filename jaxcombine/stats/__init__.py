"""Layer 3: statistics of feature maps and the loss terms built from them."""
