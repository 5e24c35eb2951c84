"""Where the dedup phases keep their files and how they read their shared inputs.

Paths under <corpus>/work/ (the filter shards, dedup/<phase>/) and <corpus>/data/ (the final shards); global
document ids (shard << 32 | row); a shard's signature outputs and rows of them by global id (`gather`); the filter
shards' lines, kept in memory from signatures to apply when a small corpus runs in one process (`local_workers`).
"""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from kamado.corpus.dedup.minhash import MinHashBatches
from kamado.corpus.dedup.store import CorruptInput, Outputs
from kamado.corpus.readers.files import open_binary
from kamado.phase_tasks import in_process
from kamado.recipe import Recipe
from kamado.stage import Workspace


def dedup_dir(ws: Workspace) -> Path:
    return ws.stage_dir("corpus") / "work" / "dedup"


def filtered_path(ws: Workspace, shard: int) -> Path:
    return ws.stage_dir("corpus") / "work" / f"filtered-{shard:05d}.jsonl.zst"


@contextmanager
def write_filtered(path: Path) -> Iterator[IO[str]]:
    """A filter shard, written as zstd level 1: on Japanese prose far cheaper to write and read than gzip (gzip level
    9 took half of a whole near-dedup run). Level 1 against 3 on the Aozora near-dup set's 28 MB: 0.07 s against
    0.18 s to write, 5.2 MB against 4.2 MB (the shard is an intermediate of the stage). Read back with
    kamado.corpus.readers.open_binary, which raises on a file cut inside a frame."""
    import zstandard

    with open(path, "wb") as raw, \
            io.TextIOWrapper(zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False), encoding="utf-8") as out:
        yield out


def data_path(ws: Workspace, shard: int) -> Path:
    return ws.stage_dir("corpus") / "data" / f"shard-{shard:05d}.jsonl.gz"


def gid(shard: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(shard) << np.uint64(32)) | rows.astype(np.uint64)


def split_gids(gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (gids >> np.uint64(32)).astype(np.int64), (gids & np.uint64(0xFFFFFFFF)).astype(np.int64)


def uses_near(recipe: Recipe) -> bool:
    return recipe.corpus.dedup.near


def uses_containment(recipe: Recipe) -> bool:
    return recipe.corpus.dedup.near and recipe.corpus.dedup.containment


def sig_of(ws: Workspace, shard: int) -> Outputs:
    return Outputs(dedup_dir(ws) / "sig", f"{shard:05d}", "signatures")


_KEPT_LINES: dict[tuple, list[bytes]] = {}  # (path, inode, mtime, size) -> lines, only while the phases run in-process
# (path, inode, mtime, size) -> (line, document) pairs the filter phase wrote, handed to signatures in-process
_KEPT_DOCS: dict[tuple, list[tuple[bytes, dict]]] = {}
HAND_OVER_BYTES = 96 << 20  # at most this much of a filter shard's lines is held for signatures (else it reads the file)


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)


_KEPT_MINHASH: dict[tuple, MinHashBatches] = {}  # (path, inode, mtime, size) -> the MinHashBatches of its documents


def hand_over(path: Path, pairs: list[tuple[bytes, dict]], minhash: MinHashBatches | None = None) -> None:
    """The filter phase, run in-process, gives signatures the lines it just wrote to `path` with their documents:
    the same bytes the file holds (signatures' line CRCs are of these), parsed once instead of decompressed and
    parsed again; and, with near dedup, their MinHash rows, computed while it filtered. Keyed by the file's
    identity: a file written again since is read from disk and hashed again."""
    key = _file_key(path)
    _KEPT_DOCS[key] = pairs
    if minhash is not None:
        _KEPT_MINHASH[key] = minhash


def handed_over_minhash(ws: Workspace, shard: int) -> MinHashBatches | None:
    """The MinHash rows the filter phase computed for this very filter shard, or None."""
    path = filtered_path(ws, shard)
    key = _file_key(path) if path.is_file() else None
    return _KEPT_MINHASH.pop(key, None) if key in _KEPT_DOCS else None


def filtered_lines(ws: Workspace, shard: int, keep: bool = False) -> Iterator[bytes]:
    """The filter shard's lines as bytes (each with its newline): apply copies kept lines as they are. In an
    in-process run of a small corpus (local_workers), the lines signatures read (`keep`) are handed to apply."""
    path = filtered_path(ws, shard)
    done = path.with_name(f"filtered-{shard:05d}.done.json")
    if not done.is_file():
        raise CorruptInput(f"{done}: missing: corpus shard {shard} was not filtered; run the corpus stage again")
    key = _file_key(path)
    if key in _KEPT_LINES:
        yield from _KEPT_LINES.pop(key)
        return
    if not (keep and in_process()):
        with open_binary(str(path)) as fh:
            yield from fh
        return
    lines = []
    with open_binary(str(path)) as fh:
        for line in fh:
            lines.append(line)
            yield line
    _KEPT_LINES[key] = lines


def read_filtered(ws: Workspace, shard: int, keep: bool = False) -> Iterator[tuple[bytes, dict]]:
    """(line, document) for each line of the filter shard (handed over by the filter phase when it ran in-process)."""
    path = filtered_path(ws, shard)
    key = _file_key(path) if path.is_file() else None
    if key in _KEPT_DOCS:
        pairs = _KEPT_DOCS.pop(key)
        if keep and in_process():
            _KEPT_LINES[key] = [line for line, _ in pairs]
        yield from pairs
        return
    for line_no, line in enumerate(filtered_lines(ws, shard, keep), 1):
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorruptInput(f"{filtered_path(ws, shard)}:{line_no}: not valid JSON ({exc.msg}); "
                               f"run the corpus stage again") from exc


def gather(recipe: Recipe, ws: Workspace, key: str, gids: np.ndarray, cache: dict) -> np.ndarray:
    """Rows `key` of the signature outputs for global ids, shard by shard (mapped files, checked blocks)."""
    shards, rows = split_gids(gids)
    out = None
    for shard in np.unique(shards):
        sig = cache.setdefault(int(shard), sig_of(ws, int(shard)))
        sel = shards == shard
        part = sig.rows(key, rows[sel])
        if out is None:
            out = np.empty((len(gids),) + part.shape[1:], dtype=part.dtype)
        out[sel] = part
    return out if out is not None else np.empty(0)


def forget_kept_lines() -> None:
    _KEPT_LINES.clear()
    _KEPT_DOCS.clear()
    for minhash in _KEPT_MINHASH.values():
        minhash.discard()
    _KEPT_MINHASH.clear()
