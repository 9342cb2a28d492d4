"""Image<->text retrieval recall@k and ranks, exact (one matmul per chunk, no index).

An image may have several captions, and one caption string may describe
several images (e.g. two vendors' drawings of the same emoji). Captions are
therefore deduplicated by string and relevance is a set of (image, text) pairs:
  - image->text: a hit at k if ANY of the image's captions is in its top k;
  - text->image: a hit at k if ANY image the caption belongs to is in its top k.
A query's rank is 1 + the number of irrelevant candidates scoring at least as
high as its best relevant one; ties count against the query, so a collapsed
model whose scores are all equal gets recall ~0, not 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from data_tools.loader_workers import auto_loader_workers
from evaluate.errors import EvaluateError
from evaluate.shard_encoding import EncodingConfig, ShardImageFeatures
from pretrain.precision import precision_context, resolve_precision

if TYPE_CHECKING:
    from pretrain.encoder import Encoder

KS = (1, 5, 10)
CaptionChoice = Literal["all", "first"]


def caption_pairs(captions_per_image: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """Unique caption strings and the (P, 2) relevant (image index, text index) pairs."""
    index: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    for image, captions in enumerate(captions_per_image):
        if not captions:
            raise EvaluateError(f"image {image} has no caption; every image needs at least one for retrieval")
        # a caption repeated for one image is one pair
        pairs.extend((image, index.setdefault(caption, len(index))) for caption in dict.fromkeys(captions))
    return list(index), torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def best_relevant_ranks(queries: torch.Tensor, candidates: torch.Tensor, pairs: torch.Tensor,
                        chunk_size: int = 1024) -> torch.Tensor:
    """(Q,) 1-based rank of each query's best-scoring relevant candidate.

    queries (Q, D), candidates (K, D); pairs (P, 2) of (query index, candidate index).
    Memory is bounded by chunk_size x K scores.
    """
    num_queries = queries.shape[0]
    order = torch.argsort(pairs[:, 0], stable=True)
    pairs = pairs[order]
    # the pairs of query q are pairs[starts[q] : starts[q + 1]]
    starts = torch.searchsorted(pairs[:, 0].contiguous(), torch.arange(num_queries + 1))
    ranks = torch.empty(num_queries, dtype=torch.long)
    for a in range(0, num_queries, chunk_size):
        b = min(a + chunk_size, num_queries)
        scores = queries[a:b].float() @ candidates.float().T  # (B, K)
        chunk_pairs = pairs[starts[a] : starts[b]]
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[chunk_pairs[:, 0] - a, chunk_pairs[:, 1]] = True
        if not relevant.any(dim=1).all():
            missing = a + int((~relevant.any(dim=1)).nonzero()[0])
            raise EvaluateError(f"query {missing} has no relevant candidate; every query needs one")
        best = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values  # (B, 1)
        ranks[a:b] = 1 + ((scores >= best) & ~relevant).sum(dim=1)
    return ranks


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, pairs: torch.Tensor, *,
                      ks: Sequence[int] = KS) -> dict[str, float | int]:
    """Recall@k both ways, mean and median rank, from (N, D) images, (M, D) texts, (P, 2) pairs."""
    image_ranks = best_relevant_ranks(image_features, text_features, pairs)  # (N,)
    text_ranks = best_relevant_ranks(text_features, image_features, pairs.flip(1))  # (M,)
    report: dict[str, float | int] = {}
    for direction, ranks in (("image_to_text", image_ranks), ("text_to_image", text_ranks)):
        for k in ks:
            report[f"{direction}_R@{k}"] = float((ranks <= k).double().mean())
        report[f"{direction}_mean_rank"] = float(ranks.double().mean())
        report[f"{direction}_median_rank"] = float(ranks.double().median())
    report["n"] = int(image_features.shape[0])
    report["n_texts"] = int(text_features.shape[0])
    return report


def clip_benchmark_recalls(image_features: torch.Tensor, text_features: torch.Tensor, pairs: torch.Tensor, *,
                           ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k as CLIP_benchmark's zeroshot_retrieval counts it, from the same (P, 2) (image, text) pairs.

    Every (image, caption) pair is its own text query, duplicates kept, whose only
    match is its image: `image_retrieval_recall@k` (text->image). An image is found
    when any of its caption entries is in its top k: `text_retrieval_recall@k`
    (image->text). Our own figures merge identical captions into one text that
    matches every image it describes, so they differ where captions repeat.
    Exact score ties count against the query here (CLIP_benchmark's `topk`
    breaks them by position), which only matters for duplicate embeddings.
    """
    entries = text_features[pairs[:, 1]]  # (P, D): one text per pair
    own = torch.arange(pairs.shape[0])
    to_image = best_relevant_ranks(entries, image_features, torch.stack([own, pairs[:, 0]], dim=1))  # (P,)
    to_text = best_relevant_ranks(image_features, entries, torch.stack([pairs[:, 0], own], dim=1))  # (N,)
    metrics = {f"image_retrieval_recall@{k}": float((to_image <= k).double().mean()) for k in ks}
    return metrics | {f"text_retrieval_recall@{k}": float((to_text <= k).double().mean()) for k in ks}


@dataclass(frozen=True)
class CaptionedImages:
    features: torch.Tensor
    """(N, D) L2-normalised image embeddings."""
    captions: list[list[str]]
    """Captions of each image."""
    keys: list[str]
    skipped: dict[str, int]
    """Corrupt samples the loader skipped, by reason."""


def sample_captions(caption: str, meta: dict[str, Any], choice: CaptionChoice) -> list[str]:
    """The .txt caption, plus the .json `captions` variants when `choice` is "all"."""
    variants = [c.strip() for c in meta.get("captions") or [] if isinstance(c, str)] if choice == "all" else []
    return list(dict.fromkeys(c for c in [caption.strip(), *variants] if c))


def encode_captioned_images(encoder: Encoder, data: str | Path, encoding: EncodingConfig = EncodingConfig(), *,
                            captions: CaptionChoice = "all", progress: bool = False) -> CaptionedImages:
    """Encode every image in the shards at `data` as `encoding` says and collect its captions."""
    images = ShardImageFeatures(encoder, data, encoding, progress=progress, desc="eval retrieval: encoding images")
    features: list[torch.Tensor] = []
    per_image: list[list[str]] = []
    keys: list[str] = []
    for image_features, batch in images:
        features.append(image_features)  # (B, D)
        per_image += [sample_captions(text, meta, captions) for text, meta in zip(batch["caption"], batch["meta"])]
        keys += batch["key"]
    if not keys:
        raise EvaluateError(f"no readable samples in {data}; check it with `clipline data inspect {data}`")
    return CaptionedImages(torch.cat(features), per_image, keys, images.skipped)


@dataclass(kw_only=True)
class RetrievalEvaluator:
    """Image<->text recall@k over captioned shards; an `Evaluator` (yields `(name, value)`)."""

    data: str | Path
    """Shard directory (any webdataset shards with images and captions)."""
    captions: CaptionChoice = "all"
    """"all": the .txt caption plus the .json `captions` variants; "first": the .txt caption only."""
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    """How the images are encoded: batch size, sample limit, loader workers, precision."""
    progress: bool = False
    """Show a progress bar on stderr."""
    name: str = "retrieval"
    """Prefix of the yielded metric names."""
    clip_benchmark: bool = False
    """Also count recall as CLIP_benchmark does (`clip_benchmark_recalls`), under the report's `clip_benchmark`."""

    def run(self, encoder: Encoder) -> Iterator[tuple[str, float]]:
        report = self.evaluate(encoder)
        for direction in ("image_to_text", "text_to_image"):
            for k in KS:
                yield f"{self.name}/{direction}_R@{k}", float(report[f"{direction}_R@{k}"])
            yield f"{self.name}/{direction}_mean_rank", float(report[f"{direction}_mean_rank"])

    def evaluate(self, encoder: Encoder) -> dict[str, Any]:
        images = encode_captioned_images(encoder, self.data, self.encoding, captions=self.captions,
                                         progress=self.progress)
        texts, pairs = caption_pairs(images.captions)
        with precision_context(encoder, self.encoding.precision)():
            chunks = [encoder.encode_text(texts[i : i + 1024]) for i in range(0, len(texts), 1024)]
        text_features = torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)  # (M, D)
        report: dict[str, Any] = dict(retrieval_metrics(images.features, text_features, pairs))
        if self.clip_benchmark:
            report["clip_benchmark"] = clip_benchmark_recalls(images.features, text_features, pairs)
        report["captions"] = self.captions
        report["precision"] = resolve_precision(encoder, self.encoding.precision)
        report["loader_workers"] = auto_loader_workers(self.encoding.num_workers)
        report["captions_per_image"] = round(len(pairs) / len(images.keys), 3)
        report["images_per_text"] = round(len(pairs) / len(texts), 3)
        report["corrupt_skipped"] = images.skipped
        return report
