"""One-stage training: tokenised examples, the module accelerate wraps, and the recipe."""
