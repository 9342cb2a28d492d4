"""An endless, resumable stream of training batches over epochs of a loader.

The stream counts where it is (epoch, batches taken in that epoch), so a
checkpoint can record the data position and a resumed run can start from
the same batch. Each epoch's loader iterator is created under a fixed seed
(seed, epoch, rank), so loader worker processes draw the same augmentations
every time that epoch is replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from pretrain.errors import PretrainError

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
        self.finished: dict[str, int] = {}  # from loaders of past epochs
        self.current: object | None = None

    def start(self, loader: object) -> None:
        """A new epoch's loader begins; the previous one's counts are final."""
        self.finished = _add(self.finished, getattr(self.current, "skipped", {}))
        self.current = loader

    def counts(self) -> dict[str, int]:
        return _add(self.finished, getattr(self.current, "skipped", {}))


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def shard_epochs(*, train_data: str, batch_size: int, image_transform: Callable, tokenize: Callable,
                 workers: int, shuffle_buffer: int, caption: str, seed: int, rank: int,
                 world_size: int, source_weights: tuple[float, ...] | None = None) -> tuple[EpochFactory, SkipTally]:
    """An epoch factory over a shard directory, and the tally of samples its loaders skipped.

    One process reads epochs (each sample once per epoch, shuffled). Several
    processes read resampled shard streams (data_tools' advice for DDP: ranks
    then never run out at different times), so each of their "epochs" is endless;
    so does a weighted mix of sources (`source_weights`, one per `::` source).
    """
    from data_tools.errors import DataError
    from data_tools.loader import list_shards, make_loader

    try:
        list_shards(train_data)
    except DataError as err:
        raise PretrainError(str(err)) from err
    skipped = SkipTally()

    def make_epoch(epoch: int) -> Iterable[dict]:
        loader = make_loader(train_data, batch_size=batch_size, image_transform=image_transform,
                             tokenize=tokenize, num_workers=workers, shuffle=True, shuffle_buffer=shuffle_buffer,
                             resampled=world_size > 1 or source_weights is not None, seed=seed, epoch=epoch,
                             caption=caption, drop_last=True, rank=rank, world_size=world_size,
                             source_weights=source_weights)
        skipped.start(loader)
        # iter() now, not lazily: the DataLoader draws its worker seed here, under BatchStream's fixed seed.
        return iter(loader)

    return make_epoch, skipped
