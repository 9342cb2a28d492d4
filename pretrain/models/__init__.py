"""Models: the config registry, the two-tower module, building towers, the attention kernel.

    registry.py   our JSON configs (`configs/`) and their variants, registered with open_clip at import
    two_tower.py  `TwoTower`, the trained module and model contract (one dict out, L2-normalised)
    build.py      building an open_clip model and locking / compiling it into a `TwoTower`
    attention.py  self-attention as explicit matmuls (faster on CPU for short sequences)
    embedding_grad.py  the token embedding's gradient added in place into a kept buffer
    bias_fused_linear.py  linear layers with the bias added inside the CPU bf16 matmul

`from pretrain import models` gives the names below; importing the package
registers the configs.
"""

from pretrain.models.bias_fused_linear import use_bias_fused_linear, use_plain_linear
from pretrain.models.build import (
    build_model,
    clip_from_info,
    compile_towers,
    create_open_clip,
    model_info,
    quiet_model_building,
)
from pretrain.models.embedding_grad import accumulate_embedding_grads_in_place
from pretrain.models.registry import (
    convolutional_image_tower,
    max_sequence_length,
    minilm_dir,
    model_config,
    register_model_config,
)
from pretrain.models.two_tower import TwoTower, is_hf_text, pad_token_id, trim_padding

__all__ = [
    "TwoTower", "accumulate_embedding_grads_in_place", "build_model", "clip_from_info", "compile_towers",
    "convolutional_image_tower", "create_open_clip", "is_hf_text", "max_sequence_length", "minilm_dir",
    "model_config", "model_info", "pad_token_id", "quiet_model_building", "register_model_config", "trim_padding",
    "use_bias_fused_linear", "use_plain_linear",
]
