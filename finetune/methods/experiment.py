"""One few-shot experiment: checkpoint + labelled shards -> features -> k-shot task -> method -> report.

`prepare` loads the encoder, the cached features of the train and eval
directories and the zero-shot head once; `make_task`, `timed_fit` and
`evaluate` are then cheap and are what a sweep loops over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluate.class_names import dataset_class_names, label_field_names
from finetune.errors import FinetuneError
from finetune.methods.clip_adapter import ClipAdapterConfig, fit_clip_adapter
from finetune.methods.features import FeatureSet, cached_features, encode_shards, load_images
from finetune.methods.full_finetune import FullFinetuneConfig, fit_full_finetune
from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.linear_probe import LinearProbeConfig, fit_linear_probe
from finetune.methods.shots import Shots, ShotSplit, sample_shots
from finetune.methods.task import FewShotTask, FittedModel, TaskImages
from finetune.methods.tip_adapter import TipAdapterConfig, fit_tip_adapter, fit_tip_adapter_f
from finetune.methods.wise_ft import WiseFtConfig, fit_wise_ft

if TYPE_CHECKING:
    from pretrain.encoder import Encoder


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """How to run one method: its config class, its fit function, whether it needs images."""

    config_cls: type
    fit: Callable[[FewShotTask, Any, TaskImages | None], FittedModel]
    needs_images: Callable[[Any], bool] = lambda config: False


METHODS: dict[str, MethodSpec] = {
    "linear-probe": MethodSpec(config_cls=LinearProbeConfig, fit=lambda t, c, i: fit_linear_probe(t, c)),
    "clip-adapter": MethodSpec(config_cls=ClipAdapterConfig, fit=lambda t, c, i: fit_clip_adapter(t, c)),
    "tip-adapter": MethodSpec(config_cls=TipAdapterConfig, fit=lambda t, c, i: fit_tip_adapter(t, c)),
    "tip-adapter-f": MethodSpec(config_cls=TipAdapterConfig, fit=lambda t, c, i: fit_tip_adapter_f(t, c)),
    "wise-ft": MethodSpec(config_cls=WiseFtConfig, fit=fit_wise_ft, needs_images=lambda c: c.tower == "image"),
    "full-finetune": MethodSpec(config_cls=FullFinetuneConfig, fit=lambda t, c, i: fit_full_finetune(t, i, c),
                                needs_images=lambda c: True),
}


@dataclass(kw_only=True)
class Prepared:
    """Encoder, labelled features of train and eval, and the zero-shot head, loaded once."""

    encoder: Encoder
    train_data: str
    eval_data: str
    train: FeatureSet
    train_rows: Tensor  # (N,) rows of `train` that carry a label
    train_y: Tensor  # (N,) class index per labelled train row
    eval: FeatureSet
    eval_rows: Tensor  # (M,)
    eval_y: Tensor  # (M,)
    classnames: list[str]
    zeroshot_weights: Tensor  # (C, D)
    logit_scale: float

    @property
    def train_x(self) -> Tensor:
        return self.train.features[self.train_rows]

    @property
    def eval_x(self) -> Tensor:
        return self.eval.features[self.eval_rows]


def prepare(encoder: Encoder, *, train_data: str, eval_data: str, label_field: str | None = None,
            templates: str = "auto", feature_cache: str | None = None) -> Prepared:
    """Features, labels and zero-shot head for `encoder`; FinetuneError on unusable labels."""
    train = cached_features(encoder, train_data, cache_dir=feature_cache)
    evalset = cached_features(encoder, eval_data, cache_dir=feature_cache)
    classnames = _train_classnames(train, label_field, train_data)
    train_rows, train_y = _labelled_rows(train, label_field, classnames, train_data)
    eval_rows, eval_y = _labelled_rows(evalset, label_field, classnames, eval_data)
    return Prepared(
        encoder=encoder, train_data=str(train_data), eval_data=str(eval_data), train=train, train_rows=train_rows,
        train_y=train_y, eval=evalset, eval_rows=eval_rows, eval_y=eval_y, classnames=classnames,
        zeroshot_weights=zeroshot_weights(encoder, classnames, templates, train.info),
        logit_scale=model_logit_scale(encoder),
    )


def zeroshot_weights(encoder: Encoder, classnames: list[str], templates: str, info: dict[str, Any]) -> Tensor:
    """(C, D) prompt-ensemble class embeddings; templates: a built-in set, a file, or "auto" (from info's source)."""
    from evaluate.templates import load_templates, templates_for_source
    from evaluate.zeroshot import ZeroShotClassifier

    if templates == "auto":
        templates = templates_for_source(info.get("source"))
    return ZeroShotClassifier.build(encoder, classnames, load_templates(templates)).weights.detach().float()


def model_logit_scale(encoder: Encoder) -> float:
    """exp(logit_scale) of the model (CLIP clamps it at 100); 100 if the model has none."""
    scale = getattr(encoder.model, "logit_scale", None)
    return 100.0 if scale is None else min(100.0, math.exp(float(scale.detach())))


def make_task(prep: Prepared, *, shots: Shots, seed: int, imbalance: ImbalanceConfig | None = None,
              val_shots: int = 4) -> tuple[FewShotTask, ShotSplit]:
    """Sample the k-shot train set and validation set for one seed."""
    split = sample_shots(prep.train_y, prep.classnames, shots, seed, val_shots=val_shots)
    if len(split.val) == 0:  # e.g. one sample per class: fall back to choosing on the shots themselves
        split = ShotSplit(train=split.train, val=split.train, val_from_train=False)
    train_x = prep.train_x
    task = FewShotTask(
        train_x=train_x[split.train], train_y=prep.train_y[split.train], val_x=train_x[split.val],
        val_y=prep.train_y[split.val], zeroshot_weights=prep.zeroshot_weights, logit_scale=prep.logit_scale,
        classnames=prep.classnames, imbalance=imbalance or ImbalanceConfig(), val_from_train=split.val_from_train,
        seed=seed,
    )
    return task, split


def evaluate(prep: Prepared, fitted: FittedModel) -> dict[str, Any]:
    """classification_report of `fitted` on the eval set (re-encoding it if the image tower was tuned)."""
    x = prep.eval_x if fitted.image_tower is None else _encode_with_tower(prep, fitted.image_tower)
    with torch.no_grad():
        return report_for_logits(fitted.head(x), prep.eval_y, prep.classnames)


def report_for_logits(logits: Tensor, labels: Tensor, classnames: list[str]) -> dict[str, Any]:
    from evaluate.metrics import classification_report

    return classification_report(labels.numpy(), logits.argmax(dim=1).numpy(), scores=logits.float().numpy(),
                                 classnames=classnames)


def zeroshot_report(prep: Prepared) -> dict[str, Any]:
    return report_for_logits(prep.logit_scale * prep.eval_x @ prep.zeroshot_weights.T, prep.eval_y, prep.classnames)


def timed_fit(prep: Prepared, method: str, task: FewShotTask, split: ShotSplit, config: Any = None
              ) -> tuple[FittedModel, float]:
    """Train `method` on `task`, loading the shots' images first if the method tunes the image tower; the fitted
    model and the seconds it all took."""
    start = time.perf_counter()
    spec = METHODS[method]
    config = config if config is not None else spec.config_cls()
    images = None
    if spec.needs_images(config):
        keys = [prep.train.keys[i] for i in prep.train_rows.tolist()]
        wanted = [keys[i] for i in split.train.tolist() + split.val.tolist()]
        both = load_images(prep.train_data, wanted, prep.encoder.preprocess)  # one pass over the shards
        n = len(split.train)
        images = TaskImages(train=both[:n], val=both[n:], visual=prep.encoder.model.visual)
    return spec.fit(task, config, images), time.perf_counter() - start


def _encode_with_tower(prep: Prepared, tower: torch.nn.Module) -> Tensor:
    tuned = SimpleNamespace(encode_image=lambda images: F.normalize(tower(images), dim=-1),
                            preprocess=prep.encoder.preprocess, device=prep.encoder.device)
    encoded = encode_shards(tuned, prep.eval_data)
    row_of = {key: i for i, key in enumerate(encoded.keys)}
    rows = [row_of[prep.eval.keys[i]] for i in prep.eval_rows.tolist()]
    return encoded.features[rows]


def _train_classnames(train: FeatureSet, label_field: str | None, data_dir: str) -> list[str]:
    """Classes present in train, in dataset.json's order (then any undeclared ones, sorted)."""
    names = train.label_names(label_field)
    present = {n for n in names if n is not None}
    if not present:
        fields = label_field_names(train.metas, train.info)
        raise FinetuneError(
            f"no sample in {data_dir} has a {'class label' if label_field is None else repr(label_field) + ' label'}; "
            f"pass `label_field` with one of: {', '.join(fields) or '(none: the shards carry no labels)'}"
        )
    declared = dataset_class_names(train.info, label_field, data=data_dir) or []
    return [c for c in declared if c in present] + sorted(present - set(declared))


def _labelled_rows(features: FeatureSet, label_field: str | None, classnames: list[str],
                   data_dir: str) -> tuple[Tensor, Tensor]:
    """Rows that carry a label, and their class indices; FinetuneError for classes not in train."""
    index = {c: i for i, c in enumerate(classnames)}
    names = features.label_names(label_field)
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise FinetuneError(
            f"{len(unknown)} eval classes in {data_dir} are not in the training data: {shown}; "
            "evaluate on the training classes only (or add them to `train_data`)"
        )
    rows = [i for i, n in enumerate(names) if n is not None]
    if not rows:
        raise FinetuneError(f"no sample in {data_dir} has a {(label_field or 'label')!r} label")
    return torch.tensor(rows), torch.tensor([index[names[i]] for i in rows])  # type: ignore[index]
