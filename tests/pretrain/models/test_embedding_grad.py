"""The token embedding's gradient added in place into a kept buffer: the same training as the dense gradient."""

from __future__ import annotations

import open_clip
import torch

from pretrain import models

CAPTIONS = ["a", "a cat", "a red car with four big wheels", "smiling face", "flag of a small island", "heart"]


def _train(in_place: bool, adamw: bool = False) -> tuple[models.TwoTower, list[int]]:
    torch.manual_seed(0)
    towers = models.build_model("clip-tiny-64")
    if in_place:
        assert models.accumulate_embedding_grads_in_place(towers) == 1  # the text tower's token table
    # SGD for the comparison (Adam's normalisation magnifies the last bits of near-zero gradients);
    # fused AdamW, the trainer's optimizer, to see it takes the kept buffer
    optimizer = (torch.optim.AdamW(towers.parameters(), lr=1e-2, weight_decay=0.1, fused=True) if adamw else
                 torch.optim.SGD(towers.parameters(), lr=0.1, momentum=0.9))
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)
    weight = towers.clip.token_embedding.weight
    buffers = []
    for step in range(3):
        for part in (tokens[:4, :8], tokens[2:]):  # two passes into one gradient, as length buckets do
            features = towers.encode_text(part)
            (features * torch.linspace(-1, 1 + step, features.numel()).view_as(features)).sum().backward()
        assert weight.grad.layout == torch.strided  # dense, as fused AdamW and clipping need
        buffers.append(weight.grad.data_ptr())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return towers, buffers


def test_in_place_embedding_gradient_trains_like_the_dense_one() -> None:
    dense, _ = _train(in_place=False)
    in_place, buffers = _train(in_place=True)
    assert len(set(buffers)) == 1  # one kept buffer, not a new 50 MB tensor per step
    torch.manual_seed(0)
    initial = models.build_model("clip-tiny-64").clip.token_embedding.weight  # same seed, untrained
    for (name, want), got in zip(dense.named_parameters(), in_place.parameters()):
        assert torch.allclose(got, want, atol=1e-5, rtol=0), name  # fp32 sums in another order
    moved = (dense.clip.token_embedding.weight != initial).any(dim=1).nonzero().flatten().tolist()
    fed = set(open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS).flatten().tolist())
    assert 10 < len(moved) and set(moved) <= fed  # only the captions' rows (no weight decay here)
    _, buffers = _train(in_place=True, adamw=True)
    assert len(set(buffers)) == 1


def test_no_gradient_buffer_outside_training() -> None:
    towers = models.build_model("clip-tiny-64")
    models.accumulate_embedding_grads_in_place(towers)
    with torch.no_grad():
        towers.encode_text(open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS))
    assert towers.clip.token_embedding.weight.grad is None
