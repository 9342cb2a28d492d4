"""Few-shot methods, fusion heads and compression on top of the shared representation."""
