"""FusionClassifier: the two towers, a fusion head and one classifier per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from finetune.fusion.heads import HeadConfig, build_head
from finetune.fusion.multitask import MultiTaskHead
from finetune.fusion.towers import encode_image_tokens, encode_text_tokens, tower_widths


class FusionClassifier(nn.Module):
    """towers(image, text) -> fusion head -> {task: logits}.

    `classes` maps each task to its class names (index = label id). The towers are
    the open_clip model itself; which of their parameters train is set by
    `towers.set_towers_trainable`. `encode` and `classify` are separate so frozen
    towers can be run once and their outputs cached.
    """

    def __init__(self, clip_model: nn.Module, head: HeadConfig, classes: dict[str, list[str]]) -> None:
        super().__init__()
        self.towers = clip_model
        self.head_config = head
        self.classes = {task: list(names) for task, names in classes.items()}
        self.widths = tower_widths(clip_model)
        self.fusion = build_head(head, self.widths)
        self.tasks = MultiTaskHead(head.hidden, {t: len(n) for t, n in self.classes.items()}, head.dropout)

    @property
    def needs_tokens(self) -> bool:
        """Only cross-attention reads token sequences; other heads use pooled features."""
        return self.head_config.fusion == "attention"

    def encode(self, images: Tensor, text: Tensor) -> dict[str, Tensor]:
        """Tower outputs for a batch: images (B, 3, H, W), text token ids (B, L)."""
        image = encode_image_tokens(self.towers, images)
        words = encode_text_tokens(self.towers, text)
        out = {"image_features": image["image_features"], "text_features": words["text_features"]}
        if self.needs_tokens:
            out |= {"image_tokens": image["image_tokens"], "text_tokens": words["text_tokens"],
                    "text_mask": words["text_mask"]}
        return out

    def classify(self, encoded: dict[str, Tensor], image_present: Tensor | None = None,
                 text_present: Tensor | None = None) -> dict[str, Tensor | dict[str, Tensor]]:
        """Fusion head + task heads on tower outputs; presence flags (B,) bool default to all True.

        Returns {"logits": {task: (B, C_t)}, "fused": (B, d)} plus "gate" / "attention" when the head has them.
        """
        batch = encoded["image_features"].shape[0]
        device = encoded["image_features"].device
        all_present = torch.ones(batch, dtype=torch.bool, device=device)
        inputs = dict(encoded)
        inputs["image_present"] = all_present if image_present is None else image_present.to(device)
        inputs["text_present"] = all_present if text_present is None else text_present.to(device)
        out: dict[str, Tensor | dict[str, Tensor]] = dict(self.fusion(inputs))
        out["logits"] = self.tasks(out["fused"])
        return out

    def forward(self, images: Tensor, text: Tensor, image_present: Tensor | None = None,
                text_present: Tensor | None = None) -> dict[str, Tensor | dict[str, Tensor]]:
        return self.classify(self.encode(images, text), image_present, text_present)
