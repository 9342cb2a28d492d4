"""clipline: a CLIP-style contrastive image-text pipeline."""

__version__ = "0.1.0"
