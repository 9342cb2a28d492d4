"""Counting samples skipped by the loader, across DataLoader worker processes."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context

LOG = logging.getLogger("data_tools")

SKIP_REASONS = (
    "corrupt_tar",  # zero-byte tar, not a tar, or cut off mid-member
    "undecodable_image",  # image bytes PIL cannot decode (truncated JPEG, not an image)
    "no_image",  # sample without a .jpg/.jpeg/.png/.webp member
    "no_caption",  # sample without a non-empty .txt (or json caption)
    "bad_metadata",  # .json that is not a JSON object, or .cls that is not an integer
    "transform_error",  # the image_transform passed in raised on this image
)


class SkipCounter:
    """Counts skips by reason in shared memory, so worker processes' counts reach the parent.

    The array is created before the DataLoader starts its workers, which inherit it
    (fork) or receive it at start-up (spawn); both share the same memory.
    """

    def __init__(self, context: multiprocessing.context.BaseContext | None = None) -> None:
        # the array must come from the same start-method context as the worker processes
        self._counts = (context or multiprocessing.get_context()).Array("q", len(SKIP_REASONS))

    def add(self, reason: str, where: str, detail: BaseException | str | None = None) -> None:
        """Count one skip and log a warning naming the file or key; never raises."""
        with self._counts.get_lock():
            self._counts[SKIP_REASONS.index(reason)] += 1
        if isinstance(detail, BaseException):
            detail = f"{type(detail).__name__}: {detail}"
        LOG.warning("skipped %s (%s)%s", where, reason, f": {detail}" if detail else "")

    def as_dict(self) -> dict[str, int]:
        """Non-zero counts by reason."""
        with self._counts.get_lock():
            return {r: int(n) for r, n in zip(SKIP_REASONS, self._counts[:]) if n}
