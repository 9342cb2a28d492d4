"""An endless, resumable stream of training batches over epochs of a loader.

The stream counts where it is (epoch, batches taken in that epoch), so a
checkpoint can record the data position and a resumed run can start from
the same batch. Each epoch's loader iterator is created under a fixed seed
(seed, epoch, rank), so loader worker processes draw the same augmentations
every time that epoch is replayed.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torchvision

from data_tools.augment import RandomBackground
from data_tools.batch_augment import BatchAugment

from pretrain.config import DataConfig
from pretrain.errors import PretrainError

LOG = logging.getLogger("pretrain")

EpochFactory = Callable[[int], Iterable[dict]]  # epoch -> that epoch's batches


class BatchStream:
    """`next(stream)` gives the next training batch, starting a new epoch when one ends."""

    def __init__(self, make_epoch: EpochFactory, *, seed: int, rank: int = 0,
                 epoch: int = 0, batch_in_epoch: int = 0) -> None:
        self.make_epoch, self.seed, self.rank = make_epoch, seed, rank
        self.epoch, self.batch_in_epoch = epoch, 0
        self._iterator = self._open(epoch)
        for _ in range(batch_in_epoch):  # resume: replay to the recorded position
            next(self)
        if self.epoch != epoch:
            raise PretrainError(f"cannot resume at batch {batch_in_epoch} of epoch {epoch}: "
                                "the data has fewer batches per epoch than when the checkpoint was written")

    def _open(self, epoch: int) -> Iterator[dict]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, epoch, self.rank)) % 2**62)
            return iter(self.make_epoch(epoch))

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict:
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.batch_in_epoch == 0:
                raise PretrainError("the training data gave no full batch in an epoch: use more samples, "
                                    "or a smaller data.batch_size") from None
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._iterator = self._open(self.epoch)
            return next(self)
        self.batch_in_epoch += 1
        return batch

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}


class SkipTally:
    """Samples the loaders skipped (corrupt images, missing captions), by reason, over all epochs."""

    def __init__(self) -> None:
        self.finished: Counter[str] = Counter()  # from loaders of past epochs
        self.current: object | None = None

    def start(self, loader: object) -> None:
        """A new epoch's loader begins; the previous one's counts are final."""
        self.finished.update(getattr(self.current, "skipped", {}))
        self.current = loader

    def counts(self) -> dict[str, int]:
        return dict(self.finished + Counter(getattr(self.current, "skipped", {})))  # loaders count non-zero reasons


@dataclass(frozen=True)
class TrainImages:
    """How the loader makes training images: a transform per decoded image and, on the batched path,
    one per stacked batch (`data_tools.batch_augment`)."""

    per_image: Callable
    per_batch: Callable | None = None


def train_transform(data: DataConfig, preprocess_cfg: dict) -> TrainImages:
    """The training image transform for a tower's preprocessing config: with `data.augment`, a random
    resized crop (plus colour jitter, grayscale as `data` says), else the eval transform; with
    `data.background="random"`, drawings with transparency are put on random backgrounds.

    Crops and backgrounds without colour jitter or grayscale run on whole batches (`data.batch_augment`);
    otherwise open_clip's per-image transform does the work."""
    size = preprocess_cfg["size"]
    square = size if isinstance(size, int) else size[0] if len(set(size)) == 1 else None
    if data.augment and data.batch_augment and not data.color_jitter and not data.grayscale_prob and square:
        augment = BatchAugment(size=square, mean=tuple(preprocess_cfg["mean"]), std=tuple(preprocess_cfg["std"]),
                               scale=(data.crop_scale_min, 1.0), background=data.background,
                               zoom_out_min=data.zoom_out_min)
        return TrainImages(augment.per_image, augment)
    augmentation = open_clip.transform.AugmentationCfg(
        scale=(data.crop_scale_min, 1.0),
        color_jitter=(data.color_jitter,) * 3 + (0.0,) if data.color_jitter else None,  # no hue shift
        color_jitter_prob=0.8 if data.color_jitter else None,
        gray_scale_prob=data.grayscale_prob or None)
    with warnings.catch_warnings():  # it warns of "unused" jitter/grayscale items that it does use
        warnings.filterwarnings("ignore", "Unused augmentation cfg items")
        transform = open_clip.transform.image_transform_v2(open_clip.transform.PreprocessCfg(**preprocess_cfg),
                                                           is_train=data.augment, aug_cfg=augmentation)
    if data.background == "random":
        return TrainImages(torchvision.transforms.Compose([RandomBackground(zoom_out_min=data.zoom_out_min),
                                                           transform]))
    return TrainImages(transform)


def shard_epochs(data: DataConfig, *, images: TrainImages, tokenize: Callable, seed: int, rank: int,
                 world_size: int) -> tuple[EpochFactory, SkipTally]:
    """An epoch factory over `data.train_data`, batched as `data` says, and the tally of samples its
    loaders skipped.

    One process reads epochs (each sample once per epoch, shuffled). Several
    processes read resampled shard streams (data_tools' advice for DDP: ranks
    then never run out at different times), so each of their "epochs" is endless;
    so does a weighted mix of sources (`data.train_data_weights`, one per `::` source).
    """
    from data_tools.errors import DataError
    from data_tools.loader import LoaderConfig, list_shards, make_loader, read_dataset_info
    from data_tools.loader_workers import auto_loader_workers

    try:
        shards = list_shards(data.train_data)
        sources = {str(Path(shard).parent) for shard in shards}
        kept = any(read_dataset_info(source).get("build", {}).get("background") == "keep" for source in sources)
    except DataError as err:
        raise PretrainError(str(err)) from err
    if data.background == "random" and not kept:
        LOG.warning("data.background=random: no train_data source was built with --background keep, so its images "
                    "have no transparency to put on random backgrounds and are used as stored")
    skipped = SkipTally()
    workers = auto_loader_workers(data.workers)
    resampled = world_size > 1 or data.train_data_weights is not None

    def make_epoch(epoch: int) -> Iterable[dict]:
        config = LoaderConfig(batch_size=data.batch_size, num_workers=workers, shuffle=True,
                              shuffle_buffer=data.shuffle_buffer, resampled=resampled, seed=seed, epoch=epoch,
                              caption=data.caption, drop_last=True, rank=rank, world_size=world_size,
                              source_weights=data.train_data_weights, keep_alpha=data.background == "random")
        loader = make_loader(data.train_data, config, image_transform=images.per_image,
                             batch_transform=images.per_batch, tokenize=tokenize)
        skipped.start(loader)
        # iter() now, not lazily: the DataLoader draws its worker seed here, under BatchStream's fixed seed.
        return iter(loader)

    return make_epoch, skipped
