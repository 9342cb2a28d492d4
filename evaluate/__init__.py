"""Evaluation of a shared representation: one evaluator interface, zero-shot, retrieval recall, reports, heat maps."""
