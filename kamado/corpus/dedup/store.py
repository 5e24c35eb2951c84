"""Checksummed phase outputs and done-markers.

A task writes its arrays (`.npy`) and JSON files through a temporary name (fsynced, renamed, the folder fsynced),
then a done-marker that lists every file with its size and BLAKE2b checksum (written the same way, last): after a
power loss, a marker that exists names files whose bytes are on disk. A reader goes through the marker: a missing
marker means the task did not finish; a size or checksum that differs means the file was truncated or corrupted
after it was written (a full disk is the classic: datatrove #157). Both are errors naming the file and the phase
to rerun.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from kamado.durable import fsync_dir, fsync_file


class CorruptInput(RuntimeError):
    """A phase's input is missing, truncated or corrupt: the message names the file and the phase to rerun."""


BLOCK = 1 << 20  # checksums per 1 MiB block: a task reading a slice of a big file checks only that slice
# Files that many tasks each read a small slice of (the sorted keys a bucket unit ranges over in every shard, the
# part of each unit's pairs a verify slice takes) get 4 KiB blocks: with 1 MiB blocks a contain unit, which needs
# a few hundred bytes of each shard's sorted samples, read and hashed whole files (up to a MiB each) of every shard.
# The marker then lists ~28 B of checksum per 4 KiB of those files (0.7%), parsed once per process per marker.
FINE_BLOCK = 1 << 12


def _block_sums(path: Path, block: int) -> list[str]:
    sums = []
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            sums.append(hashlib.blake2b(chunk, digest_size=12).hexdigest())
    return sums


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
    Arrays named in `fine` (read by small slices) get FINE_BLOCK checksum blocks, the others BLOCK.

    Durable in this order: every temp file (the marker's too) fsynced, together; the data files renamed and the
    folder fsynced; then the marker renamed and the folder fsynced. A marker that survives a power loss names
    files whose bytes and names are on disk; the syncs cost two folder syncs and one batch."""
    fine = set(fine)
    folder.mkdir(parents=True, exist_ok=True)
    tmps: dict[str, Path] = {}  # key -> temp file, renamed to the name without ".tmp"
    for key, value in (arrays or {}).items():
        tmps[key] = folder / f"{name}.{key}.npy.tmp"
        with open(tmps[key], "wb") as fh:
            np.save(fh, np.ascontiguousarray(value), allow_pickle=False)
    for key, value in (docs or {}).items():
        tmps[key] = folder / f"{name}.{key}.json.tmp"
        tmps[key].write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    marker = {
        "phase": phase,
        "files": {k: _entry(t, FINE_BLOCK if k in fine else BLOCK, (arrays or {}).get(k)) for k, t in tmps.items()},
        "stats": stats or {},
    }
    marker_path = _marker(folder, name)
    marker_tmp = folder / f".{marker_path.name}.tmp-{os.getpid()}"  # the writer's own: two writers never share it
    try:
        marker_tmp.write_text(json.dumps(marker, ensure_ascii=False, indent=2), encoding="utf-8")
        _fsync_all([*tmps.values(), marker_tmp])
        for tmp in tmps.values():
            os.replace(tmp, tmp.with_suffix(""))
        if tmps:
            fsync_dir(folder)
        os.replace(marker_tmp, marker_path)
    finally:
        marker_tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    return marker


_SYNC_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def _fsync_all(paths: list[Path]) -> None:
    """fsync every file, concurrently: the file system commits concurrent syncs together. On this project's
    shared test machine under other jobs' writes, 16 files took ~50 ms one after another and 1-6 ms at once."""
    global _SYNC_POOL
    if len(paths) < 2:
        for path in paths:
            fsync_file(path)
        return
    if _SYNC_POOL is None or _SYNC_POOL[0] != os.getpid():
        _SYNC_POOL = (os.getpid(), ThreadPoolExecutor(8, thread_name_prefix="kamado-fsync"))
    list(_SYNC_POOL[1].map(fsync_file, paths))


def _entry(path: Path, block: int, array: np.ndarray | None) -> dict:
    """The marker's entry for the file `path` is renamed to (its name without ".tmp")."""
    entry = {"file": path.with_suffix("").name, "bytes": path.stat().st_size, "block": block,
             "blake2b": _block_sums(path, block)}
    if array is not None:  # the .npy layout, so that a reader of a slice need not parse the header
        entry["npy"] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": entry["bytes"] - array.nbytes}
    return entry


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
        self._layouts: dict[str, tuple[Path, np.dtype, tuple, int]] = {}

    def _entry(self, key: str) -> tuple[dict, Path]:
        """The marker's entry for `key` and its file, whose size is checked (once)."""
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
        return entry, path

    def _check(self, key: str, path: Path, index: int, size: int, data: bytes) -> None:
        """Block `index` (of `size` bytes) of `key`'s file holds `data`: compare it with the marker (once)."""
        checked = self._checked.setdefault(key, set())
        if index in checked:
            return
        if hashlib.blake2b(data, digest_size=12).hexdigest() != self.marker["files"][key]["blake2b"][index]:
            raise CorruptInput(f"{path}: corrupt: checksum of bytes {index * size}..{(index + 1) * size} differs from "
                               f"its done-marker (written by phase '{self.phase}'); delete it and run phase "
                               f"'{self.phase}' again")
        checked.add(index)

    def _path(self, key: str, blocks: Iterable[int] | None = None) -> Path:
        """The file behind `key`, its size checked, and the checksums of `blocks` (all when None)."""
        entry, path = self._entry(key)
        size = entry.get("block", BLOCK)
        checked = self._checked.get(key, set())
        todo = [i for i in (range(len(entry["blake2b"])) if blocks is None else blocks) if i not in checked]
        if todo:
            with open(path, "rb") as fh:
                for i in todo:
                    fh.seek(i * size)
                    self._check(key, path, i, size, fh.read(size))
        return path

    def block(self, key: str) -> int:
        """The checksum block size of `key`'s file (BLOCK for markers written before blocks varied)."""
        entry = self.marker["files"].get(key)
        return entry.get("block", BLOCK) if entry else BLOCK

    def _layout(self, key: str) -> tuple[Path, np.dtype, tuple, int]:
        """Path, dtype, shape and data offset of `key`'s .npy file, from the marker (or its header, block checked)."""
        if key not in self._layouts and "npy" in self.marker["files"].get(key, {}):
            entry, path = self._entry(key)
            npy = entry["npy"]
            self._layouts[key] = (path, np.dtype(npy["dtype"]), tuple(npy["shape"]), npy["offset"])
        if key not in self._layouts:  # a marker without the layout: read the header
            path = self._path(key, blocks=range(1))
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(fh)
                if fortran:  # write_outputs writes C order only
                    raise CorruptInput(f"{path}: not an array written by phase '{self.phase}'; run phase '{self.phase}' again")
                self._layouts[key] = (path, dtype, shape, fh.tell())
        return self._layouts[key]

    def _read(self, key: str, first: int, last: int) -> bytearray:
        """Bytes first..last of `key`'s file, read with the blocks they span and those blocks' checksums checked:
        one read, and only the blocks the slice needs (4 KiB for FINE_BLOCK files)."""
        entry, path = self._entry(key)
        size = entry.get("block", BLOCK)
        b0, b1 = first // size, (last - 1) // size + 1
        with open(path, "rb") as fh:
            fh.seek(b0 * size)
            buf = bytearray(fh.read((b1 - b0) * size))
        for i in range(b0, b1):
            self._check(key, path, i, size, memoryview(buf)[(i - b0) * size:(i - b0 + 1) * size])
        return buf[first - b0 * size:last - b0 * size]

    def array(self, key: str) -> np.ndarray:
        """The whole array, every block checked."""
        return np.load(self._path(key), allow_pickle=False)

    def mapped(self, key: str) -> np.memmap:
        """The array memory-mapped, only its size and header checked: read it through `rows`. Not kept: a kept map
        keeps the file pages it touched in the task's RSS (verify reads rows of every shard)."""
        return np.load(self._path(key, blocks=range(1)), mmap_mode="r", allow_pickle=False)

    def search(self, key: str, lo: np.uint64, hi: np.uint64 | None, row: int | None = None) -> slice:
        """The slice of a sorted 1-D array (or of row `row` of a 2-D one) with lo <= value < hi (hi None: to the end),
        by binary search reading one item at a time: a bucket unit maps no file to find its key range. The items
        the search reads are not checked; the slice, read through `take`, is."""
        path, dtype, shape, offset = self._layout(key)
        n, item = shape[-1], dtype.itemsize
        base = offset + (row * n * item if row is not None else 0)
        fd = os.open(path, os.O_RDONLY)
        try:
            def left(value) -> int:  # np.searchsorted(arr, value, side="left")
                a, b = 0, n
                while a < b:
                    m = (a + b) // 2
                    if np.frombuffer(os.pread(fd, item, base + m * item), dtype)[0] < value:
                        a = m + 1
                    else:
                        b = m
                return a
            return slice(left(lo), n if hi is None else left(hi))
        finally:
            os.close(fd)

    def take(self, key: str, start: int, stop: int, row: int | None = None) -> np.ndarray:
        """Copy of arr[start:stop] (or arr[row, start:stop] of a 2-D array), the blocks it spans checked."""
        path, dtype, shape, offset = self._layout(key)
        if row is None:  # rows of a 1-D or 2-D array
            stop = min(stop, shape[0])
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            base, tail = offset, tuple(shape[1:])
        else:
            stop = min(stop, shape[1])
            row_bytes, base, tail = dtype.itemsize, offset + row * shape[1] * dtype.itemsize, ()
        if stop <= start:
            return np.empty((0,) + tail, dtype=dtype)
        data = self._read(key, base + start * row_bytes, base + stop * row_bytes)
        return np.frombuffer(data, dtype=dtype).reshape((-1,) + tail)

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
