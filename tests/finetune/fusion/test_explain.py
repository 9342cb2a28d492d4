"""Fusion explanations: a trained head's gate values or attention weights, rendered per sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.fusion.config import FusionConfig
from finetune.fusion.explain import explain_pair, explain_samples
from finetune.fusion.run import train_fusion
from finetune.fusion.store import load_fusion
from finetune.train_eval_paths import TrainEvalPathsConfig
from tests.finetune.fusion_fakes import tiny_checkpoint


def test_fusion_explanations(emoji_shards: Path, tmp_path: Path) -> None:
    run = tiny_checkpoint(tmp_path / "ckpt")
    for fusion in ("gated", "attention"):
        out = tmp_path / fusion
        paths = TrainEvalPathsConfig(checkpoint=str(run), train_data=str(emoji_shards), eval_data=str(emoji_shards))
        train_fusion(paths, out=str(out),
                     config=FusionConfig(fusion=fusion, tasks="category", epochs=1, hidden=32, attention_heads=2),
                     log=lambda _: None)
        model, encoder = load_fusion(out)
        image = torch.zeros(3, 64, 64)
        explanation = explain_pair(model, encoder.tokenizer, image, "grinning face")
        assert set(explanation["predictions"]) == {"both", "image_only", "text_only"}
        if fusion == "gated":
            assert 0.0 < explanation["gate_mean"] < 1.0 and explanation["gate"].shape == (32,)
        else:
            assert explanation["patch_attention_to_words"].shape == (4, 4)
            words = [w for w, _ in explanation["word_attention"]]
            assert words[0] == "<caption>" and "face" in words
            assert sum(a for _, a in explanation["word_attention"]) == pytest.approx(1.0, abs=1e-5)
        samples = explain_samples(str(out), str(emoji_shards), tmp_path / f"{fusion}_png", count=2)
        assert len(samples) == 2 and (tmp_path / f"{fusion}_png" / "fusion_1.png").is_file()
