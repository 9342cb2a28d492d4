"""CLIP_benchmark's layout and its way of counting recall, checked against a copy of its own code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evaluate.clip_benchmark_format import dataset_name, zeroshot_classification, zeroshot_retrieval
from evaluate.retrieval_recall import clip_benchmark_recalls, retrieval_metrics


def reference_recall_at_k(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int) -> torch.Tensor:
    """clip_benchmark/metrics/zeroshot_retrieval.py `recall_at_k`, as published."""
    nb_texts, nb_images = scores.shape
    topk_indices = torch.topk(scores, k, dim=1)[1]
    nb_positive = positive_pairs.sum(dim=1)
    topk_indices_onehot = torch.nn.functional.one_hot(topk_indices, num_classes=nb_images)
    positive_pairs_reshaped = positive_pairs.view(nb_texts, 1, nb_images)
    nb_true_positive = (topk_indices_onehot * positive_pairs_reshaped).sum(dim=(1, 2))
    return nb_true_positive / nb_positive


def test_recalls_match_clip_benchmarks_code() -> None:
    torch.manual_seed(0)
    images = F.normalize(torch.randn(40, 16), dim=-1)
    owner = torch.arange(40).repeat_interleave(torch.randint(1, 4, (40,)))  # 1-3 captions per image
    texts = F.normalize(images[owner] + 1.2 * torch.randn(len(owner), 16), dim=-1)  # (P, D), each caption its own text
    pairs = torch.stack([owner, torch.arange(len(owner))], dim=1)
    ours = clip_benchmark_recalls(images, texts, pairs)
    scores = texts @ images.T  # CLIP_benchmark: texts x images
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), owner] = True
    for k in (1, 5, 10):
        image_retrieval = (reference_recall_at_k(scores, positive, k) > 0).float().mean().item()
        text_retrieval = (reference_recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(image_retrieval)
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(text_retrieval)
        assert 0 < image_retrieval < 1


def test_a_caption_two_images_share_is_two_queries_each_with_one_match() -> None:
    # images a and b both captioned "smile"; b is closer to the text. Ours: one text, found at rank 1
    # (any matching image counts). CLIP_benchmark: two queries; the one owned by a misses at k=1.
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6]]), dim=-1)
    texts = F.normalize(torch.tensor([[0.7, 0.7]]), dim=-1)
    pairs = torch.tensor([[0, 0], [1, 0]])
    assert retrieval_metrics(images, texts, pairs, ks=(1,))["text_to_image_R@1"] == 1.0
    assert clip_benchmark_recalls(images, texts, pairs, ks=(1,))["image_retrieval_recall@1"] == 0.5


def test_layouts() -> None:
    report = {"top1": 0.5, "top5": 0.9, "mean_per_class_recall": 0.45, "num_classes": 4}
    layout = zeroshot_classification(report, dataset="emoji_val", model="clip-rn-64", pretrained="runs/x")
    assert layout == {"dataset": "emoji_val", "model": "clip-rn-64", "pretrained": "runs/x",
                      "task": "zeroshot_classification", "language": "en",
                      "metrics": {"acc1": 0.5, "acc5": None, "mean_per_class_recall": 0.45}}  # < 5 classes
    retrieval = zeroshot_retrieval({"clip_benchmark": {"image_retrieval_recall@5": 0.7}}, dataset="d", model="m",
                                   pretrained=None)
    assert retrieval["task"] == "zeroshot_retrieval" and retrieval["metrics"] == {"image_retrieval_recall@5": 0.7}
    assert dataset_name("shards/emoji-val/", {"source": "emoji", "build": {"split": "val"}}) == "emoji_val"
    assert dataset_name("shards/mine/", {}) == "mine"
