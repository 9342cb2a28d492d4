"""Length-bucketed text batches give the trimmed batch's features and gradients, for fewer token rows."""

from __future__ import annotations

import functools
import itertools

import open_clip
import pytest
import torch

from pretrain import models
from pretrain.models import length_buckets
from pretrain.models.length_buckets import bucket_rows, caption_lengths, choose_buckets, round_up, run_length_sorted

CAPTIONS = ["a", "a cat", "a red car with four big wheels and a roof", "smiling face", "flag of a small island",
            "x y", "one two three four five six seven eight", "heart"]


def _cost(lengths: list[int], ends: list[int], multiple: int, cost_rows: int) -> int:
    starts = [0, *ends[:-1]]
    return sum((e - s) * round_up(lengths[e - 1], multiple) + cost_rows for s, e in zip(starts, ends))


@pytest.mark.parametrize(("multiple", "row_multiple"), [(1, 1), (4, 1), (1, 4), (4, 3)])
def test_choose_buckets_finds_the_cheapest_split(multiple: int, row_multiple: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        lengths = sorted(torch.randint(1, 20, (12,), generator=generator).tolist())
        got = choose_buckets(lengths, max_buckets=3, multiple=multiple, row_multiple=row_multiple, cost_rows=5)
        assert got[-1] == len(lengths) and got == sorted(set(got))
        assert all(end % row_multiple == 0 for end in got[:-1])  # bucket sizes repeat: few matmul shapes
        candidates = range(row_multiple, len(lengths), row_multiple)
        brute = min(_cost(lengths, [*cuts, len(lengths)], multiple, 5)
                    for k in range(3) for cuts in itertools.combinations(candidates, k))
        assert _cost(lengths, got, multiple, 5) == brute


def test_no_split_when_it_does_not_pay() -> None:
    assert choose_buckets([3, 3, 4, 5], max_buckets=3, cost_rows=100) == [4]
    assert choose_buckets([2] * 50 + [30] * 2, max_buckets=3, cost_rows=10) == [50, 52]


def test_bucket_rows_cover_every_row_once_trimmed_to_the_bucket() -> None:
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)
    parts = bucket_rows(tokens, 0, max_buckets=3, multiple=1)
    assert sorted(torch.cat([rows for rows, _ in parts]).tolist()) == list(range(len(CAPTIONS)))
    lengths = caption_lengths(tokens, 0)
    for rows, trimmed in parts:
        assert trimmed.shape[1] == int(lengths[rows].max())
        assert torch.equal(trimmed, tokens[rows, :trimmed.shape[1]])


@pytest.mark.parametrize("row_multiple", [1, 2])
def test_bucketed_text_features_and_gradients_match_one_trimmed_batch(row_multiple: int, monkeypatch) -> None:
    # 8 captions: at the default row multiple (16) and cost per bucket (256 rows) a split never pays
    monkeypatch.setattr(length_buckets, "BUCKET_ROW_MULTIPLE", row_multiple)
    monkeypatch.setattr(length_buckets, "choose_buckets", functools.partial(choose_buckets, cost_rows=1))
    torch.manual_seed(0)
    plain = models.build_model("clip-tiny-64", text_buckets=1, explicit_attention=True)
    bucketed = models.build_model("clip-tiny-64", text_buckets=3, explicit_attention=True)
    bucketed.load_state_dict(plain.state_dict())
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)
    passes = []
    bucketed.clip.token_embedding.register_forward_hook(lambda module, args, out: passes.append(args[0].shape))
    outs = []
    for towers in (plain, bucketed):
        features = towers.encode_text(tokens)  # (B, D)
        (features * torch.linspace(-1, 1, features.numel()).view_as(features)).sum().backward()
        outs.append((features.detach(), towers.clip.transformer.resblocks[0].attn.in_proj_weight.grad,
                     towers.clip.token_embedding.weight.grad))
    for want, got in zip(*outs):
        # fp32 sums in another order: within 1e-6 of the tensor's largest entry
        assert torch.allclose(got, want, atol=1e-6 * float(want.abs().max()), rtol=1e-4)
    assert len(passes) > 1 and all(rows % row_multiple == 0 for rows, _ in passes[:-1])  # split, in whole multiples


def test_length_sorted_chunks_are_cut_to_their_longest_and_come_back_in_input_order() -> None:
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)  # (8, 32)
    lengths = caption_lengths(tokens, 0)  # (8,)
    widths: list[int] = []

    def encode(chunk: torch.Tensor) -> torch.Tensor:  # (b, L_b) -> (b, 2): the caption's length and first token
        widths.append(chunk.shape[1])
        return torch.stack([caption_lengths(chunk, 0), chunk[:, 0]], dim=1)

    features = run_length_sorted(encode, tokens, 0, chunk=3)
    assert torch.equal(features, torch.stack([lengths, tokens[:, 0]], dim=1))  # every row back in its place
    assert widths == [int(w) for w in lengths.sort().values[[2, 5, 7]]]  # 3 chunks, each cut to its longest
    assert sum(w * n for w, n in zip(widths, (3, 3, 2))) < 0.6 * len(CAPTIONS) * int(lengths.max())
