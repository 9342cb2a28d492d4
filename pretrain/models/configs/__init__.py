"""open_clip JSON model configs (data, registered by pretrain.models.registry at import)."""
