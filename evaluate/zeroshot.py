"""Zero-shot classification: class names + prompt templates -> a linear classifier.

Prompt ensembling (CLIP, Radford et al. 2021): every class name is put into
each template, the prompts are encoded and L2-normalised, averaged per class and
renormalised. An image's class scores are cosine similarities with those class
embeddings: logits = image_features @ weights.T.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from data_tools.loader import read_dataset_info
from data_tools.loader_workers import auto_loader_workers
from evaluate.class_names import cls_class_names, dataset_class_names, label_field_names, label_indices, sample_label
from evaluate.errors import EvaluateError
from evaluate.metrics import classification_report
from evaluate.shard_encoding import EncodingConfig, ImageEncoder, ShardImageFeatures
from evaluate.templates import fill_template, load_templates, templates_for_source
from pretrain.precision import precision_context, resolve_precision

if TYPE_CHECKING:
    from pretrain.encoder import Encoder


class ImageClassifier(ImageEncoder, Protocol):
    """A trained classifier that stands in for the prompts: a few-shot adapter (`finetune.methods.adapter_io`).

    It encodes images itself (its own image tower, or the encoder's) and scores
    them against its own classes.
    """

    classnames: list[str]
    config: dict[str, Any]

    def logits(self, image_features: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Class embeddings built from prompts; `logits` scores images against them."""

    classnames: list[str]
    templates: list[str]
    weights: torch.Tensor
    """(C, D) rows L2-normalised: the renormalised mean prompt embedding per class."""

    @classmethod
    def build(cls, encoder: Encoder, classnames: Sequence[str], templates: Sequence[str], *,
              batch_size: int = 256) -> ZeroShotClassifier:
        if not classnames or not templates:
            raise EvaluateError("zero-shot needs at least one class name and one template")
        prompts = [fill_template(t, name) for name in classnames for t in templates]  # class-major
        chunks = [encoder.encode_text(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
        features = torch.cat(chunks).float().reshape(len(classnames), len(templates), -1)  # (C, T, D)
        features = torch.nn.functional.normalize(features, dim=-1)
        weights = torch.nn.functional.normalize(features.mean(dim=1), dim=-1)  # (C, D)
        return cls(list(classnames), list(templates), weights)

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """(N, D) normalised image features -> (N, C) cosine similarities."""
        return image_features.float() @ self.weights.T


@dataclass(frozen=True)
class EncodedImages:
    features: torch.Tensor
    """(N, D) L2-normalised image embeddings."""
    labels: list[str | None]
    """Class name of each image (None: the sample has no label of the chosen kind)."""
    keys: list[str]
    skipped: dict[str, int]
    """Corrupt samples the loader skipped, by reason."""


def encode_labelled_images(encoder: Encoder, data: str | Path, encoding: EncodingConfig = EncodingConfig(), *,
                           label_field: str | None, progress: bool = False) -> EncodedImages:
    """Encode every image in the shards at `data` as `encoding` says and read its class name.

    Fails after the first batch if no sample in it has a label, rather than
    encoding a whole corpus that cannot be scored.
    """
    info = read_dataset_info(data)
    dataset_classes = cls_class_names(info, label_field)
    images = ShardImageFeatures(encoder, data, encoding, progress=progress, desc="zeroshot: encoding images")
    features: list[torch.Tensor] = []
    labels: list[str | None] = []
    keys: list[str] = []
    for image_features, batch in images:
        features.append(image_features)  # (B, D)
        labels += [sample_label(meta, cls_index, label_field, dataset_classes)
                   for meta, cls_index in zip(batch["meta"], batch["label"].tolist())]
        keys += batch["key"]
        if all(label is None for label in labels):
            raise EvaluateError(_no_labels_message(data, label_field, info, batch["meta"][0]))
    if not keys:
        raise EvaluateError(f"no readable samples in {data}; check it with `clipline data inspect {data}`")
    return EncodedImages(torch.cat(features), labels, keys, images.skipped)


def _no_labels_message(data: str | Path, label_field: str | None, info: dict, meta: dict) -> str:
    fields = label_field_names([meta], info)
    if label_field is not None:
        return (f"samples in {data} have no {label_field!r} in their .json (top level or `labels`) and no .cls; "
                f"pass `label_field` with one of: {', '.join(fields) or '(none: the shards carry no labels)'}")
    hint = f"; pass `label_field` with one of: {', '.join(fields)}" if fields else (
        "; rebuild the shards with class labels (.cls or .json 'label')"
    )
    return f"samples in {data} have no class label (.cls or .json 'label') and zero-shot needs one{hint}"


@dataclass(frozen=True)
class ZeroShotResult:
    report: dict[str, Any]
    classifier: ZeroShotClassifier
    image_features: torch.Tensor
    """(N, D) features of the labelled images that were scored."""
    y_true: torch.Tensor
    """(N,) class index of each scored image."""
    logits: torch.Tensor
    """(N, C) cosine similarities."""


@dataclass(kw_only=True)
class ZeroShotEvaluator:
    """Zero-shot classification of labelled shards; an `Evaluator` (yields `(name, value)`)."""

    data: str | Path
    """Shard directory with labels (.cls, .json `label`, or .json `labels[FIELD]`)."""
    classnames: list[str] | None = None
    """Class names for the prompts; None: dataset.json `classes` / `label_fields[FIELD]`, else the labels seen."""
    prompt_names: list[str] | None = None
    """Names to put in the prompts, parallel to `classnames` (None: the class names themselves)."""
    templates: str | list[str] = "auto"
    """Built-in set name, template file, a list of templates, or "auto" (chosen from dataset.json `source`)."""
    label_field: str | None = None
    """Classify by this .json field (e.g. "category"): found at the top level, else under `labels`, else .cls."""
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    """How the images are encoded: batch size, sample limit, loader workers, precision."""
    progress: bool = False
    """Show a progress bar on stderr."""
    name: str = "zeroshot"
    """Prefix of the yielded metric names."""
    adapter: ImageClassifier | None = None
    """Classify with this adapter (`finetune.methods.adapter_io.load_adapter`) instead of the prompts: its image
    features and head, its classes. The prompt classifier is still built, for the embedding map."""

    def run(self, encoder: Encoder) -> Iterator[tuple[str, float]]:
        report = self.evaluate(encoder).report
        for key in ("top1", "top5", "mean_per_class_recall", "macro_f1"):
            yield f"{self.name}/{key}", float(report[key])

    def resolve_templates(self, info: dict[str, Any]) -> tuple[str, list[str]]:
        """(name shown in the report, templates)."""
        if not isinstance(self.templates, str):
            return "custom", list(self.templates)
        name = templates_for_source(info.get("source")) if self.templates == "auto" else self.templates
        return name, load_templates(name)

    def evaluate(self, encoder: Encoder) -> ZeroShotResult:
        info = read_dataset_info(self.data)
        declared = dataset_class_names(info, self.label_field, data=str(self.data))
        template_name, templates = self.resolve_templates(info)
        encoded = encode_labelled_images(self.adapter or encoder, self.data, self.encoding,
                                         label_field=self.label_field, progress=self.progress)
        keep = [i for i, label in enumerate(encoded.labels) if label is not None]
        labels = [encoded.labels[i] for i in keep]
        if self.adapter is not None:
            classnames = self.adapter.classnames
            unseen = sorted(set(labels) - set(classnames))
            if unseen:
                raise EvaluateError(
                    f"{self.data} has classes the adapter was not trained on: {', '.join(map(repr, unseen[:5]))}; "
                    f"the adapter knows {len(classnames)} classes ({', '.join(classnames[:5])}, ...)"
                )
        else:
            classnames = self.classnames or declared or sorted(set(labels))
        y_true = torch.tensor(label_indices(labels, classnames, data=str(self.data)))  # (N,)
        prompt_names = self.prompt_names if self.classnames and self.prompt_names else classnames
        with precision_context(encoder, self.encoding.precision)():
            classifier = ZeroShotClassifier.build(encoder, prompt_names, templates)
        features = encoded.features[keep]  # (N, D)
        logits = (self.adapter or classifier).logits(features)  # (N, C)
        report = classification_report(y_true, scores=logits, classnames=classnames)
        if self.adapter is not None:
            prompts = classification_report(y_true, scores=classifier.logits(features), classnames=classnames)
            report["adapter"] = {key: self.adapter.config.get(key) for key in ("method", "shots", "seed")}
            report["adapter"]["prompts_top1"] = prompts["top1"]  # what the prompts alone score on the same images
        report["templates"] = {"name": template_name, "count": len(templates), "examples": templates[:3]}
        if list(prompt_names) != list(classnames):
            report["prompt_names"] = dict(zip(classnames, prompt_names))
        report["unlabelled_skipped"] = len(encoded.labels) - len(keep)
        report["precision"] = resolve_precision(encoder, self.encoding.precision)
        report["loader_workers"] = auto_loader_workers(self.encoding.num_workers)
        report["corrupt_skipped"] = encoded.skipped
        report["modality_gap"] = float((features.mean(0) - classifier.weights.mean(0)).norm())
        return ZeroShotResult(report, classifier, features, y_true, logits)
