"""Checksummed phase outputs and done-markers.

A task writes its arrays (`.npy`) and JSON files through a temporary name, then a done-marker that lists every
file with its size and BLAKE2b checksum. A reader goes through the marker: a missing marker means the task did
not finish; a size or checksum that differs means the file was truncated or corrupted after it was written (a
full disk is the classic: datatrove #157). Both are errors naming the file and the phase to rerun.
"""

from __future__ import annotations

import copy
import functools
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
# Files that many tasks each read a small slice of (the sorted keys a bucket unit ranges over, the pairs a verify
# slice takes) get 4 KiB blocks: with 1 MiB blocks a contain unit, which needs a few hundred bytes of each shard,
# read and hashed whole blocks of every shard (hashing went ~10x up at 16x in benchmarks/dedup_memory.py). Their
# marker lists ~28 B of checksum per 4 KiB (0.7% of the file).
FINE_BLOCK = 1 << 12


def _block_sums(path: Path, block: int) -> list[str]:
    sums = []
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            sums.append(hashlib.blake2b(chunk, digest_size=12).hexdigest())
    return sums


def _block_sum(fh, index: int, block: int) -> str:
    fh.seek(index * block)
    return hashlib.blake2b(fh.read(block), digest_size=12).hexdigest()


@functools.lru_cache(maxsize=256)
def _parse_marker(path: str, inode: int, mtime_ns: int, size: int) -> dict:
    """A marker's JSON, parsed once per process while the file is unchanged: a bucket unit opens every
    signature marker, and each opens a few times (unit list, ranges, its reads)."""
    return json.loads(Path(path).read_text())


def _marker(folder: Path, name: str) -> Path:
    return folder / f"{name}.done.json"


def is_done(folder: Path, name: str) -> bool:
    return _marker(folder, name).is_file()


def write_outputs(folder: Path, name: str, phase: str, arrays: dict[str, np.ndarray] | None = None,
                  docs: dict[str, Any] | None = None, stats: dict | None = None, fine: Iterable[str] = ()) -> dict:
    """Write `<name>.<key>.npy` for each array and `<name>.<key>.json` for each JSON value, then the marker.
    Arrays named in `fine` (read by small slices) get FINE_BLOCK checksum blocks, the others BLOCK."""
    fine = set(fine)
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
        "files": {k: _entry(folder / f, FINE_BLOCK if k in fine else BLOCK) for k, f in files.items()},
        "stats": stats or {},
    }
    write_json_atomic(_marker(folder, name), marker)
    return marker


def _entry(path: Path, block: int) -> dict:
    return {"file": path.name, "bytes": path.stat().st_size, "block": block, "blake2b": _block_sums(path, block)}


class Outputs:
    """What one task wrote, read back through its marker; each file is checked once, when first opened."""

    def __init__(self, folder: Path, name: str, phase: str):
        self.folder, self.name, self.phase = folder, name, phase
        path = _marker(folder, name)
        if not path.is_file():
            raise CorruptInput(f"{path}: missing: phase '{phase}' did not finish this output; run phase '{phase}' again")
        try:
            st = path.stat()
            self.marker = _parse_marker(str(path), st.st_ino, st.st_mtime_ns, st.st_size)  # shared: read only
        except json.JSONDecodeError as exc:
            raise CorruptInput(f"{path}: corrupt done-marker ({exc}); run phase '{phase}' again") from exc
        self.stats: dict = copy.deepcopy(self.marker.get("stats", {}))  # the caller's to change
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
        sums, size = entry["blake2b"], entry.get("block", BLOCK)
        checked = self._checked.setdefault(key, set())
        todo = [i for i in (range(len(sums)) if blocks is None else blocks) if i not in checked]
        if todo:
            with open(path, "rb") as fh:
                for i in todo:
                    if _block_sum(fh, i, size) != sums[i]:
                        raise CorruptInput(f"{path}: corrupt: checksum of bytes {i * size}..{(i + 1) * size} differs from "
                                           f"its done-marker (written by phase '{self.phase}'); delete it and run phase "
                                           f"'{self.phase}' again")
                    checked.add(i)
        return path

    def block(self, key: str) -> int:
        """The checksum block size of `key`'s file (BLOCK for markers written before blocks varied)."""
        entry = self.marker["files"].get(key)
        return entry.get("block", BLOCK) if entry else BLOCK

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
        size = self.block(key)
        self._path(key, blocks=range(first // size, (last - 1) // size + 1))
        return np.array(arr[start:stop] if row is None else arr[row, start:stop])

    def rows(self, key: str, index: np.ndarray) -> np.ndarray:
        """Copy of arr[index] (sorted or not), the blocks holding those rows checked."""
        arr = self.mapped(key)
        index = np.asarray(index, dtype=np.int64)
        if len(index) == 0:
            return np.array(arr[:0])
        row_bytes = arr.dtype.itemsize * (arr.shape[1] if arr.ndim == 2 else 1)
        size = self.block(key)
        first = (arr.offset + index * row_bytes) // size
        last = (arr.offset + (index + 1) * row_bytes - 1) // size
        blocks = np.unique(np.concatenate([first, last]))
        self._path(key, blocks=[int(b) for b in blocks])
        return np.array(arr[index])

    def json(self, key: str):
        return json.loads(self._path(key).read_text(encoding="utf-8"))
