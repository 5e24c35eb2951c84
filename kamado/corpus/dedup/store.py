"""Checksummed phase outputs and done-markers.

A task writes its arrays (`.npy`) and JSON files through a temporary name, then a done-marker that lists every
file with its size and BLAKE2b checksum. A reader goes through the marker: a missing marker means the task did
not finish; a size or checksum that differs means the file was truncated or corrupted after it was written (a
full disk is the classic: datatrove #157). Both are errors naming the file and the phase to rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from kamado.stage import write_json_atomic


class CorruptInput(RuntimeError):
    """A phase's input is missing, truncated or corrupt: the message names the file and the phase to rerun."""


BLOCK = 1 << 20  # checksums per 1 MiB block: a task reading a slice of a big file checks only that slice


def _block_sums(path: Path) -> list[str]:
    sums = []
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            sums.append(hashlib.blake2b(block, digest_size=12).hexdigest())
    return sums


def _block_sum(path: Path, index: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(index * BLOCK)
        return hashlib.blake2b(fh.read(BLOCK), digest_size=12).hexdigest()


def _marker(folder: Path, name: str) -> Path:
    return folder / f"{name}.done.json"


def is_done(folder: Path, name: str) -> bool:
    return _marker(folder, name).is_file()


def write_outputs(folder: Path, name: str, phase: str, arrays: dict[str, np.ndarray] | None = None,
                  docs: dict[str, Any] | None = None, stats: dict | None = None) -> dict:
    """Write `<name>.<key>.npy` for each array and `<name>.<key>.json` for each JSON value, then the marker."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, value in (arrays or {}).items():
        path = folder / f"{name}.{key}.npy"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(value), allow_pickle=False)
        os.replace(tmp, path)
        files[key] = path.name
    for key, value in (docs or {}).items():
        path = folder / f"{name}.{key}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        files[key] = path.name
    marker = {
        "phase": phase,
        "files": {k: {"file": f, "bytes": (folder / f).stat().st_size, "blake2b": _block_sums(folder / f)} for k, f in files.items()},
        "stats": stats or {},
    }
    write_json_atomic(_marker(folder, name), marker)
    return marker


class Outputs:
    """What one task wrote, read back through its marker; each file is checked once, when first opened."""

    def __init__(self, folder: Path, name: str, phase: str):
        self.folder, self.name, self.phase = folder, name, phase
        path = _marker(folder, name)
        if not path.is_file():
            raise CorruptInput(f"{path}: missing: phase '{phase}' did not finish this output; run phase '{phase}' again")
        try:
            self.marker = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CorruptInput(f"{path}: corrupt done-marker ({exc}); run phase '{phase}' again") from exc
        self.stats: dict = self.marker.get("stats", {})
        self._sized: set[str] = set()
        self._checked: dict[str, set[int]] = {}

    def _path(self, key: str, blocks: Iterable[int] | None = None) -> Path:
        """The file behind `key`, its size checked, and the checksums of `blocks` (all when None)."""
        entry = self.marker["files"].get(key)
        if entry is None:
            raise CorruptInput(f"{_marker(self.folder, self.name)}: lists no file '{key}'; run phase '{self.phase}' again")
        path = self.folder / entry["file"]
        if key not in self._sized:
            if not path.is_file():
                raise CorruptInput(f"{path}: missing (written by phase '{self.phase}'); run phase '{self.phase}' again")
            size = path.stat().st_size
            if size != entry["bytes"]:
                raise CorruptInput(f"{path}: truncated or overwritten: {size} bytes, its done-marker says {entry['bytes']} "
                                   f"(written by phase '{self.phase}'); delete it and run phase '{self.phase}' again")
            self._sized.add(key)
        sums = entry["blake2b"]
        checked = self._checked.setdefault(key, set())
        for i in (range(len(sums)) if blocks is None else blocks):
            if i not in checked:
                if _block_sum(path, i) != sums[i]:
                    raise CorruptInput(f"{path}: corrupt: checksum of bytes {i * BLOCK}..{(i + 1) * BLOCK} differs from its "
                                       f"done-marker (written by phase '{self.phase}'); delete it and run phase '{self.phase}' again")
                checked.add(i)
        return path

    def array(self, key: str) -> np.ndarray:
        """The whole array, every block checked."""
        return np.load(self._path(key), allow_pickle=False)

    def mapped(self, key: str) -> np.memmap:
        """The array memory-mapped, only its size and header checked: read it through `take`/`rows`."""
        arr = np.load(self._path(key, blocks=range(1)), mmap_mode="r", allow_pickle=False)
        return arr

    def take(self, key: str, start: int, stop: int, row: int | None = None) -> np.ndarray:
        """Copy of arr[start:stop] (or arr[row, start:stop] of a 2-D array), the blocks it spans checked."""
        arr = self.mapped(key)
        if stop <= start:
            return np.array(arr[:0] if row is None else arr[row, :0])
        width = arr.shape[1] if arr.ndim == 2 else 1
        item = arr.dtype.itemsize
        if row is None:  # rows of a 1-D or 2-D array
            first, last = arr.offset + start * width * item, arr.offset + stop * width * item
        else:
            base = arr.offset + row * width * item
            first, last = base + start * item, base + stop * item
        self._path(key, blocks=range(first // BLOCK, (last - 1) // BLOCK + 1))
        return np.array(arr[start:stop] if row is None else arr[row, start:stop])

    def rows(self, key: str, index: np.ndarray) -> np.ndarray:
        """Copy of arr[index] (sorted or not), the blocks holding those rows checked."""
        arr = self.mapped(key)
        index = np.asarray(index, dtype=np.int64)
        if len(index) == 0:
            return np.array(arr[:0])
        row_bytes = arr.dtype.itemsize * (arr.shape[1] if arr.ndim == 2 else 1)
        first = (arr.offset + index * row_bytes) // BLOCK
        last = (arr.offset + (index + 1) * row_bytes - 1) // BLOCK
        blocks = np.unique(np.concatenate([first, last]))
        self._path(key, blocks=[int(b) for b in blocks])
        return np.array(arr[index])

    def json(self, key: str):
        return json.loads(self._path(key).read_text(encoding="utf-8"))
