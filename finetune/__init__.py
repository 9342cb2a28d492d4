"""Zero-shot, probes, adapters, fusion heads, metrics and reports."""
