"""Retrieval recall@k on hand-built matrices, a brute-force reference, and known-answer encoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluate.errors import EvaluateError
from evaluate.retrieval_recall import RetrievalEvaluator, best_relevant_ranks, caption_pairs, retrieval_metrics, sample_captions
from evaluate.shard_encoding import EncodingConfig
from tests.finetune.fakes import ColourEncoder, write_shards

IN_PROCESS = EncodingConfig(num_workers=0)  # no loader worker processes


def unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_hand_built_multi_caption_case() -> None:
    # 3 images; texts 0,1 -> image 0; text 2 -> image 1; texts 3,4 -> image 2
    images = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    texts = unit([0.1, 1, 0], [1, 0.2, 0], [0, 1, 0.5], [0, 0, 1], [0.9, 0, 0.1])
    pairs = torch.tensor([[0, 0], [0, 1], [1, 2], [2, 3], [2, 4]])
    # image->text cosines: image 0: t4 .994 (wrong) > t1 .981 -> rank 2; image 1: t0 .995 (wrong)
    # > t2 .894 -> rank 2; image 2: t3 1.0 -> rank 1
    report = retrieval_metrics(images, texts, pairs, ks=(1, 2))
    assert report["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert report["image_to_text_R@2"] == 1.0
    assert report["image_to_text_mean_rank"] == pytest.approx((2 + 2 + 1) / 3)
    # text->image: t0 best image 1 (wrong, .995) > image 0 (.0995) -> rank 2; t1 -> image 0 rank 1;
    # t2 -> image 1 rank 1; t3 -> image 2 rank 1; t4 -> image 0 (wrong) first, image 2 second -> rank 2
    assert report["text_to_image_R@1"] == pytest.approx(3 / 5)
    assert report["text_to_image_mean_rank"] == pytest.approx((2 + 1 + 1 + 1 + 2) / 5)
    assert report["n"] == 3 and report["n_texts"] == 5


def brute_force_ranks(queries: torch.Tensor, candidates: torch.Tensor, relevant: list[set[int]]) -> list[int]:
    ranks = []
    for q in range(queries.shape[0]):
        scores = [float(queries[q] @ candidates[c]) for c in range(candidates.shape[0])]
        order = sorted(range(len(scores)), key=lambda c: (-scores[c], c not in relevant[q]))
        ranks.append(1 + min(order.index(c) for c in relevant[q]))
    return ranks


def test_matches_brute_force_with_chunking() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(37, 8, generator=gen), dim=-1)
    captions = [[f"t{i}", f"t{(i * 7) % 50}"] for i in range(37)]  # some texts shared between images
    texts, pairs = caption_pairs(captions)
    text_features = torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=gen), dim=-1)
    per_image = [{t for i, t in pairs.tolist() if i == image} for image in range(37)]
    per_text = [{i for i, t in pairs.tolist() if t == text} for text in range(len(texts))]
    assert any(len(s) > 1 for s in per_text)
    got = best_relevant_ranks(images, text_features, pairs, chunk_size=5)
    assert got.tolist() == brute_force_ranks(images, text_features, per_image)
    got = best_relevant_ranks(text_features, images, pairs.flip(1), chunk_size=4)
    assert got.tolist() == brute_force_ranks(text_features, images, per_text)


def test_identical_captions_are_one_text_relevant_to_every_image() -> None:
    texts, pairs = caption_pairs([["grinning face", "grin"], ["grinning face"], ["cat", "cat"]])
    assert texts == ["grinning face", "grin", "cat"]
    assert pairs.tolist() == [[0, 0], [0, 1], [1, 0], [2, 2]]
    with pytest.raises(EvaluateError, match="no caption"):
        caption_pairs([["a"], []])


def test_ties_count_against_the_query() -> None:
    """A collapsed model (every score equal) must not look perfect."""
    images = torch.ones(4, 3) / 3**0.5
    texts = torch.ones(4, 3) / 3**0.5
    report = retrieval_metrics(images, texts, torch.tensor([[i, i] for i in range(4)]), ks=(1, 4))
    assert report["image_to_text_R@1"] == 0.0
    assert report["image_to_text_R@4"] == 1.0
    assert report["text_to_image_mean_rank"] == 4.0


def test_sample_captions() -> None:
    meta = {"captions": ["grinning face", "an emoji of grinning face", " ", 3]}
    assert sample_captions("grinning face", meta, "all") == ["grinning face", "an emoji of grinning face"]
    assert sample_captions("grinning face", meta, "first") == ["grinning face"]


def test_evaluator_on_known_answer_encoder(tmp_path: Path) -> None:
    classes = ["cat", "dog", "bird"]
    data = write_shards(tmp_path / "shards", classes, per_class=3, captions=True)
    # captions per image: "a picture of CLASS" (shared by the 3 images of a class) and "CLASS number J" (own)
    encoder = ColourEncoder(classes)
    report = RetrievalEvaluator(data=data, encoding=IN_PROCESS).evaluate(encoder)
    assert report["n"] == 9 and report["n_texts"] == 3 + 9
    # every text of a class scores the same against its images, so an image's 2 relevant texts tie
    # with the 2 "CLASS number J" captions of its siblings -> rank 3
    assert report["image_to_text_R@1"] == 0.0
    assert report["image_to_text_mean_rank"] == 3.0
    assert report["image_to_text_R@5"] == 1.0
    # shared captions: every image of the class is relevant -> rank 1; an own caption ties with the
    # 2 other images of its class (identical image embeddings) -> rank 3
    assert report["text_to_image_R@1"] == pytest.approx(3 / 12)
    assert report["text_to_image_R@5"] == 1.0
    assert report["text_to_image_mean_rank"] == pytest.approx((3 * 1 + 9 * 3) / 12)
    first_only = RetrievalEvaluator(data=data, captions="first", encoding=IN_PROCESS).evaluate(encoder)
    assert first_only["n_texts"] == 3
    assert first_only["text_to_image_R@1"] == 1.0 and first_only["image_to_text_R@1"] == 1.0
    metrics = dict(RetrievalEvaluator(data=data, name="val", encoding=IN_PROCESS).run(encoder))
    assert metrics["val/image_to_text_R@5"] == 1.0
    assert set(metrics) == {f"val/{d}_{m}" for d in ("image_to_text", "text_to_image")
                            for m in ("R@1", "R@5", "R@10", "mean_rank")}  # fmt: skip
