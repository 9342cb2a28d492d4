"""Writing, validating, inspecting and streaming WebDataset shards."""
