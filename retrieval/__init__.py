"""Embedding shards, FAISS indices, search and the HTTP service."""
