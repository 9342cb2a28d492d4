"""Compression: int8 and bf16 stay close to fp32, pruning is exact and survives recovery, the table adds up."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from finetune.compress.table import CompressConfig, compression_table, load_int8_encoder
from finetune.compress.variants import (apply_masks, as_encoder, magnitude_prune, prunable_weights, quantize_int8,
                                        recover_pruned, serialized_bytes, sparsity, to_bf16)
from finetune.errors import FinetuneError
from pretrain import checkpoint
from pretrain.models.bias_fused_linear import BiasFusedLinear
from pretrain.encoder import Encoder
from tests.finetune.fusion_fakes import tiny_checkpoint, tiny_clip


@pytest.fixture(scope="module")
def base() -> Encoder:
    return Encoder.from_model(tiny_clip(0), model_name="fusion-test-tiny")


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)


def test_int8_and_bf16_outputs_stay_close_to_fp32_and_shrink(base: Encoder) -> None:
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    texts = ["a red apple", "grinning face", "flag of france", "a dog", "airplane", "snow"]
    ref_image, ref_text = base.encode_image(images), base.encode_text(texts)
    for name, model in (("int8", quantize_int8(base.model)), ("bf16", to_bf16(base.model))):
        encoder = as_encoder(model, base, name)
        assert _cosines(encoder.encode_image(images), ref_image).min() > 0.99, name
        assert _cosines(encoder.encode_text(texts), ref_text).min() > 0.99, name
        assert encoder.encode_image(images).dtype == torch.float32
    full = serialized_bytes(base.model)
    assert serialized_bytes(to_bf16(base.model)) / full == pytest.approx(0.5, abs=0.02)
    assert serialized_bytes(quantize_int8(base.model)) / full < 0.4  # int8 Linear and embedding weights
    assert base.model.visual.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.float32  # original untouched


def test_int8_quantises_every_linear_layer_of_a_loaded_encoder(tmp_path: Path) -> None:
    loaded = Encoder.load(tiny_checkpoint(tmp_path / "run"))  # its linear layers add the bias inside the matmul
    linears = [name for name, m in loaded.model.named_modules() if isinstance(m, nn.Linear)
               and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]
    assert linears and all(type(loaded.model.get_submodule(name)) is BiasFusedLinear for name in linears)
    quantized = quantize_int8(loaded.model)
    assert all(isinstance(quantized.get_submodule(name), DynamicQuantizedLinear) for name in linears)
    assert type(loaded.model.get_submodule(linears[0])) is BiasFusedLinear  # the encoder's own model untouched
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert _cosines(as_encoder(quantized, loaded, "int8").encode_image(images), loaded.encode_image(images)).min() > 0.99


def test_magnitude_pruning_zeroes_exactly_the_smallest_entries() -> None:
    model = tiny_clip(1)
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    embedding = model.token_embedding.weight.detach().clone()
    masks = magnitude_prune(model, 0.5)
    assert set(masks) == set(before) and any(".attn.in_proj_weight" in n for n in masks)
    for name, weight in prunable_weights(model).items():
        assert int((weight == 0).sum()) == round(0.5 * weight.numel()), name
        kept = before[name].abs()[masks[name]]
        dropped = before[name].abs()[~masks[name]]
        assert kept.min() >= dropped.max(), name  # every kept entry is at least as large as every pruned one
    assert sparsity(model) == pytest.approx(0.5, abs=1e-6)
    assert torch.equal(model.token_embedding.weight, embedding)  # embeddings are not pruned


def test_pruning_ties_still_removes_the_exact_count() -> None:
    layer = nn.Linear(4, 5, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.25)  # 20 equal magnitudes
    magnitude_prune(layer, 0.3)
    assert int((layer.weight == 0).sum()) == 6
    with pytest.raises(FinetuneError, match="prune amount must be in"):
        magnitude_prune(layer, 1.0)


def test_recovery_keeps_the_sparsity_while_the_weights_move() -> None:
    teacher = tiny_clip(2).eval()
    student = copy.deepcopy(teacher)
    masks = magnitude_prune(student, 0.5)
    pruned_copy = {n: w.detach().clone() for n, w in prunable_weights(student).items()}
    generator = torch.Generator().manual_seed(0)

    def batches():  # noqa: ANN202
        for _ in range(2):
            yield {"image": torch.randn(4, 3, 64, 64, generator=generator),
                   "text": torch.randint(1, 400, (4, 16), generator=generator)}

    losses = recover_pruned(student, teacher, masks, batches, steps=3, lr=1e-3, log=lambda _: None)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert sparsity(student) == pytest.approx(0.5, abs=1e-6)
    moved = [n for n, w in prunable_weights(student).items() if not torch.equal(w, pruned_copy[n])]
    assert moved
    apply_masks(student, masks)
    assert sparsity(student) == pytest.approx(0.5, abs=1e-6)


def test_compression_table_on_fixture_shards(emoji_shards: Path, tmp_path: Path) -> None:
    run = tiny_checkpoint(tmp_path / "ckpt", seed=3)
    table = compression_table(checkpoint=str(run), data=str(emoji_shards), train_data=str(emoji_shards),
                              out=str(tmp_path / "out"), log=lambda _: None,
                              config=CompressConfig(recovery_steps=2, batch_size=16, speed_images=32))
    rows = table["variants"]
    assert list(rows) == ["fp32", "bf16", "int8", "pruned"]
    assert rows["bf16"]["size_mb_ratio"] == pytest.approx(0.5, abs=0.02)
    assert rows["int8"]["size_mb_ratio"] < 0.4
    assert rows["pruned"]["sparsity_after_recovery"] == pytest.approx(0.5, abs=1e-6)
    assert rows["fp32"]["zeroshot_top1_delta"] == 0.0 and rows["fp32"]["n"] == 48
    assert all(row["images_per_s"] > 0 for row in rows.values())
    pruned = Encoder.load(checkpoint.find_latest(tmp_path / "out" / "pruned"))
    assert sparsity(pruned.model) == pytest.approx(0.5, abs=1e-6)
    int8 = load_int8_encoder(str(run), tmp_path / "out" / "int8" / "model_int8.pt")
    images = torch.randn(2, 3, 64, 64)
    assert _cosines(int8.encode_image(images), Encoder.load(run).encode_image(images)).min() > 0.99
    with pytest.raises(FinetuneError, match="unknown compression variant"):
        compression_table(checkpoint=str(run), data=str(emoji_shards), out=str(tmp_path / "x"),
                          config=CompressConfig(variants="fp32,fp8"))
