"""Execute a Plan on real modules through hooks: streaming, precision, attention, tiled VAE, budget."""
