"""Writing files and folders so that a reader never sees half of one: everything is written
under a hidden temporary name beside its target and renamed into place (a rename within one
folder is atomic on POSIX), and a failure leaves no temporary behind.

The one place for these names and steps: run files (rundir), exported configs (search),
caches (data), launch records (the console), checkpoints and Hugging Face exports.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"  # a folder being written (checkpoint recovery removes those of dead writers)


def temp_file_for(path: Path) -> Path:
    """The hidden temporary a file is written to first: ``.<name>.<pid>.tmp`` beside it (the
    pid keeps two processes writing the same file apart)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_file_atomic(path: str | Path, data: bytes | str, *, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) through a temporary beside it,
    which never outlives a failure. ``fsync``: the bytes reach the disk before the rename, for
    files that must survive a power cut, not only a crash. Raises the OSError."""
    path = Path(path)
    tmp = temp_file_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:  # a signal or a full disk mid-write leaves no half file behind
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def side_path(path: Path, prefix: str = TMP_PREFIX) -> Path:
    """``<prefix><name>-<pid>-<random>`` beside ``path``: a temporary (or swapped-out) folder
    whose writer can be told alive later (``parse_side_name`` reads the name back)."""
    return path.parent / f"{prefix}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def parse_side_name(rest: str) -> tuple[str, int | None]:
    """A ``side_path`` name without its prefix, back to its target and writer:
    'step-00000100-4242-ab12cd34' -> ('step-00000100', 4242)."""
    parts = rest.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return rest, None


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final`` and rename it to ``final`` on success; on an
    exception it is removed. Another process finishing the same folder first is fine."""
    tmp = side_path(final)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
