"""Open an index dir written by `clipline index build`, memory-mapped.

`IO_FLAG_MMAP_IFC` maps flat code arrays in place (Flat, HNSW storage, the RFlat
re-ranking vectors, IVF-Flat lists), so opening a multi-GB index costs almost
no resident memory; pages load on first touch. Plain `IO_FLAG_MMAP` only maps
IVF array lists and cannot be combined with it, so IFC is the one flag used.

`LoadedIndex.search` answers with faiss, or, for a batch of `list_scan.MIN_BATCH`
or more queries, with the AMX list scan where the build enabled it (summary's
`batch_scan`) and this machine can run it (`list_scan.py`).
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from retrieval.errors import RetrievalError
from retrieval.index import list_scan
from retrieval.index.build import INDEX_FORMAT
from retrieval.index.native import CompileError


@dataclass
class LoadedIndex:
    """One modality's index with its summary and the dir's provenance."""

    index: faiss.Index
    modality: str
    summary: dict
    """This modality's entry of summary.json (factory, params, recall...)."""
    info: dict
    """info.json: checkpoint, data dir, dim, count, metric."""
    root: Path
    _scan: list_scan.ListScan | None = field(default=None, init=False, repr=False)
    _scan_checked: bool = field(default=False, init=False, repr=False)  # `_scan` is final (None: faiss)
    _scan_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, k), of (nq, dim) float32 `queries`: the batch scan for batches it serves,
        else faiss (module doc)."""
        scan = self.batch_scan() if len(queries) >= list_scan.MIN_BATCH and k <= list_scan.MAX_K else None
        return scan.search(queries, k) if scan else self.index.search(queries, k)

    def batch_scan(self) -> list_scan.ListScan | None:
        """The AMX list scan, built on first use (its codes: seconds at 1M vectors), or None where the build
        did not enable it or this machine cannot run it (with one warning saying why)."""
        if not self._scan_checked:
            with self._scan_lock:
                if not self._scan_checked:
                    self._scan = self._build_scan()
                    self._scan_checked = True
        return self._scan

    def _build_scan(self) -> list_scan.ListScan | None:
        if not (self.summary.get("batch_scan") or {}).get("enabled"):
            return None
        reason = list_scan.machine_unsupported()
        if reason is None:
            try:
                return list_scan.ListScan(self.index)
            except (CompileError, OSError, ValueError) as err:
                reason = str(err)
        warnings.warn(f"{self.root}: batched queries use faiss, not the AMX list scan the index was built "
                      f"with: {reason}", stacklevel=3)
        return None


def read_index_info(index_dir: str | Path) -> tuple[dict, dict]:
    """(info.json, summary.json) of an index dir, with a clear error if it is not one."""
    root = Path(index_dir)
    try:
        info = json.loads((root / "info.json").read_text())
        summary = json.loads((root / "summary.json").read_text())
    except FileNotFoundError as err:
        raise RetrievalError(f"{root} is not an index dir (no {Path(err.filename).name}); "
                             "build one with `clipline index build EMB --out DIR`") from err
    except json.JSONDecodeError as err:
        raise RetrievalError(f"{root} has a corrupt info.json or summary.json; rebuild the index") from err
    if info.get("format") != INDEX_FORMAT:
        raise RetrievalError(f"{root} has index format {info.get('format')!r}, expected {INDEX_FORMAT!r}; rebuild it")
    return info, summary


def load_index(index_dir: str | Path, modality: str | None = None, *, mmap: bool = True) -> LoadedIndex:
    """Open `modality` (default: image if built, else the first) with its tuned search parameters."""
    root = Path(index_dir)
    info, summary = read_index_info(root)
    built = info["modalities"]
    modality = modality or ("image" if "image" in built else built[0])
    if modality not in built:
        raise RetrievalError(f"{root} has no {modality} index (built: {', '.join(built)}); "
                             f"rebuild with `clipline index build --modality {modality}`")
    entry = summary[modality]
    path = root / f"{modality}.faiss"
    if not path.is_file():
        raise RetrievalError(f"index file {path} is missing; rebuild the index")
    if path.stat().st_size != entry["size_on_disk_bytes"]:
        raise RetrievalError(f"index file {path} is {path.stat().st_size} bytes, expected "
                             f"{entry['size_on_disk_bytes']}: truncated or replaced; rebuild the index")
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as err:
        reason = str(err).splitlines()[-1][:120]
        raise RetrievalError(f"index file {path} is corrupt ({reason}); rebuild the index") from err
    if index.ntotal != info["count"] or index.d != info["dim"]:
        raise RetrievalError(f"index file {path} holds {index.ntotal} x {index.d} vectors but info.json says "
                             f"{info['count']} x {info['dim']}; rebuild the index")
    if entry.get("params"):
        faiss.ParameterSpace().set_index_parameters(index, entry["params"])
    return LoadedIndex(index=index, modality=modality, summary=entry, info=info, root=root)
