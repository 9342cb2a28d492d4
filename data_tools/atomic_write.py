"""Atomic writes: a file or a whole directory appears complete or not at all.

Everything is written under a temporary name beside the target (same
directory, so the final rename stays on one filesystem), flushed to disk with
fsync, then renamed over the target in one `os.replace`. A reader, or a crash
(even SIGKILL), never sees half a report, half an array or half an index.

    write_json_atomic(path, payload)          JSON, indent 2, UTF-8, trailing newline
    write_text_atomic(path, text)             text
    write_bytes_atomic(path, data)            bytes
    with atomic_path(path) as tmp: ...        anything a library writes to a path (PNG, .npy, parquet, FAISS)
    PendingFile(path) ... .commit()           a file kept open across calls (shard tars)
    with atomic_directory(path) as tmp: ...   a directory, written as `.NAME.tmp-XXXX` then renamed

Temporary names start with a dot, so globs such as `part_*.npy` or `step_*`
never pick up a half-written one. They carry the writer's host and process id
(`.NAME.tmp-HOST-PID-RAND`), so the leftovers of a killed writer are
recognised and removed by the next write of the same target
(`remove_stale_temporaries`); a live writer's are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_tools.output_paths import check_output_dir, check_output_file


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's contents to disk (directories: best effort)."""
    if path.is_dir():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # some platforms cannot open a directory
            return
        with contextlib.suppress(OSError):
            os.fsync(fd)
        os.close(fd)
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class PendingFile:
    """A file written at `path`, a temporary name beside `target`, until `commit` fsyncs it and renames it
    onto `target`, or `discard` removes it.

    `atomic_path` is this around one block; a writer that keeps a file open
    across calls (the shard writer, one tar per many `write`s) holds one
    itself. The default temporary name keeps `target`'s suffix
    (`.report.tmp-HOST-PID-RAND.png`), so writers that choose the format from
    the extension (PIL, matplotlib, `np.save`) write the right one; `temporary`
    names it instead.
    """

    def __init__(self, target: str | Path, temporary: str | None = None) -> None:
        self.target = check_output_file(target)
        default = f".{self.target.stem}.tmp-{_writer_tag()}-{secrets.token_hex(4)}{self.target.suffix}"
        self.path = self.target.with_name(temporary or default)

    def commit(self) -> Path:
        """Flush the file to disk and rename it onto the target; returns the target."""
        fsync_path(self.path)
        os.replace(self.path, self.target)
        return self.target

    def discard(self) -> None:
        """Remove the temporary file, leaving the target as it was."""
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (a `PendingFile`); on success fsync it and rename it onto
    `path`, on an exception remove it and leave `path` as it was."""
    pending = PendingFile(path)
    try:
        yield pending.path
        pending.commit()
    except BaseException:
        pending.discard()
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write `payload` as JSON (indent 2, non-ASCII kept, trailing newline) atomically; returns `path`.

    Values JSON cannot encode (a `Path`, a date) are written as their `str`.
    """
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n"
    return write_text_atomic(path, text)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory `.NAME.tmp-XXXX` beside `path`; on success rename it to `path`.

    Every file in it is fsynced before the rename. An existing `path` is moved
    aside first and deleted only once the new one is in place, so at every
    moment `path` is the old directory or the new one. On an exception the
    temporary directory is removed and `path` is left as it was.
    """
    path = check_output_dir(path, create=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{_writer_tag()}-", dir=path.parent))
    try:
        yield tmp
        for item in sorted(tmp.rglob("*")):
            fsync_path(item)
        fsync_path(tmp)
        old = path.with_name(f".{path.name}.old-{_writer_tag()}-{secrets.token_hex(4)}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)  # no-op where there was no old directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(path.parent)


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


def _writer_tag() -> str:
    """HOST-PID of this process, as temporary names carry it."""
    return f"{_host_tag()}-{os.getpid()}"


STALE_NAME = re.compile(r"^\.(?P<target>.+)\.(?:tmp|old)-(?P<host>[0-9a-f]{4})-(?P<pid>\d+)-")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(directory: str | Path, target: str | None = None) -> list[Path]:
    """Delete temporaries in `directory` left by a killed writer on this host (all, or those of `target`).

    A writer counts as killed when its process id no longer runs here; a name
    written on another host, or in an older format, is left alone.
    """
    directory, removed = Path(directory), []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        found = STALE_NAME.match(entry.name)
        if not found or found["host"] != _host_tag() or (target and found["target"] != target):
            continue
        if _process_alive(int(found["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
