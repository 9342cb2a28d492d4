"""`clipline index build --distributor ray`: an IVF index filled in parts on Ray workers, merged on disk.

The coarse quantizer (and any codebook) is trained once, by the caller; the trained,
empty index is written beside the output. One Ray task per embedding part adds that
part's vectors (ids = their global row numbers) to a copy of it and writes the copy,
under a temporary name renamed when whole. The parts' inverted lists are then merged
into one `OnDiskInvertedLists` file (`faiss.contrib.ondisk.merge_ondisk`, as autofaiss
does), so the merge streams from memory-mapped parts. Within each list the entries
keep the parts' order, so the index equals one filled in a single process from the
same trained index, entry for entry.

The index that is written holds its lists in memory (a `.faiss` file that names no
path of this machine, loaded as every other index is); the on-disk lists are removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

from data_tools.atomic_write import atomic_path
from data_tools.distributor import DistributorConfig, ray_session, run_tasks
from retrieval.embedding_store import EmbeddingSet
from retrieval.errors import RetrievalError


def check_mergeable(index: faiss.Index, factory: str) -> None:
    """Refuse what cannot be filled in parts: anything but an IVF index (optionally behind a transform)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or isinstance(index, (faiss.IndexRefine, faiss.IndexIVFPQR)):
        raise RetrievalError(f"`distributor` ray fills IVF indices in parts and {factory!r} is not one (or keeps "
                             "a refinement copy); pass `factory` IVF<n>,Flat / IVF<n>,PQ<m> or use `distributor` local")


def fill_with_ray(emb: EmbeddingSet, modality: str, trained: faiss.Index, work: Path, distributed: DistributorConfig,
                  batch_size: int, log: Callable[[str], None]) -> faiss.Index:
    """`trained` (empty) filled with every `modality` vector of `emb` by one Ray task per part."""
    work.mkdir(parents=True, exist_ok=True)
    trained_path = work / "trained.faiss"
    faiss.write_index(trained, str(trained_path))
    offsets = np.cumsum([0, *emb.part_rows])
    jobs = [(str(emb.root), modality, part, int(offsets[i]), str(trained_path), str(work / f"{part}.faiss"),
             batch_size) for i, part in enumerate(emb.parts)]
    with ray_session(distributed, RetrievalError) as ray:
        run_tasks(ray, fill_part, jobs, emb.parts, config=distributed, weights=emb.part_rows,
                  desc=f"[{modality}] fill parts (ray)", unit="vec", error=RetrievalError)
    log(f"[{modality}] merging {len(jobs)} parts' inverted lists on disk")
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.read_index(str(trained_path))
    with c_stdout_to_stderr():  # FAISS printf()s "resizing FILE to N bytes": stdout is for results
        merge_ondisk(index, [job[5] for job in jobs], str(work / "merged.ivfdata"))
    in_memory(index)
    shutil.rmtree(work)
    return index


def fill_part(emb_dir: str, modality: str, part: str, first_id: int, trained: str, out: str, batch_size: int) -> int:
    """Add one part's vectors (ids from `first_id`) to the trained index and write it to `out`; rows added."""
    index = faiss.read_index(trained)
    emb = EmbeddingSet(emb_dir)
    added = 0
    for batch in emb.part_batches(modality, part, batch_size):
        index.add_with_ids(batch, np.arange(first_id + added, first_id + added + len(batch), dtype=np.int64))
        added += len(batch)
    with atomic_path(out) as tmp:
        faiss.write_index(index, str(tmp))
    return added


def in_memory(index: faiss.Index) -> None:
    """Move an IVF index's inverted lists from disk into memory (so its file is self-contained)."""
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    lists.merge_from(ivf.invlists, 0)
    ivf.replace_invlists(lists, True)
    lists.this.disown()


@contextlib.contextmanager
def c_stdout_to_stderr() -> Iterator[None]:
    """Send what C code writes to stdout (file descriptor 1) to stderr while inside."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)  # C stdio buffers a pipe: flush what was printed before fd 1 points back
        os.dup2(saved, 1)
        os.close(saved)
