"""Models, losses, training loop, checkpoints and the Encoder."""
