"""Training: the official interpolation objective, what trains, LoRA, export, and the engine around them."""
