"""Writes that a later step trusts: temp file → fsync → rename → fsync of the folder.

A rename alone is atomic for readers but not durable: after a power loss or a kernel crash the new name can point
at a file whose data never reached the disk (ext4/xfs delayed allocation). Syncing the file before the rename and
the folder after it makes "the name exists" imply "the bytes are there".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file and folder under `root`, then `root` itself (a checkpoint written by a library that never syncs)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(Path(folder))


def write_atomic(path: Path, data: str | bytes, sync: bool = True) -> None:
    """Replace `path` with `data`: a reader sees the old content or the new, never a part of either. `sync=False`
    skips the fsyncs: still atomic for a killed process, but a power loss may leave the old file or none — only for
    bookkeeping whose loss a rerun mends (a phase task's record: the task is rerun, its units found done)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def write_text_durable(path: Path, text: str) -> None:
    """`write_atomic` into a folder made if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def write_json_durable(path: Path, data: Any) -> None:
    """Readable, diff-stable JSON (sorted keys, a final newline), written with `write_text_durable`."""
    write_text_durable(path, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
