"""Input identity for stage fingerprints: which files a stage reads, and a content hash of each.

A stage's fingerprint holds every input file's size and content hash, so an appended source file or edited SFT
data redoes that stage (and, through the done-markers, every stage after it). Rules:

- files up to SAMPLE_ABOVE bytes are hashed whole; larger ones are sampled (head, middle and tail blocks plus
  the size), and their mtime joins the identity, since an in-place edit between the sampled blocks would
  otherwise go unseen: touching a huge file redoes its stage, touching a small one does not (same content);
- hashes are cached by (path, size, mtime) in `<workdir>/.input-hashes.json`, so a rerun only stats its inputs;
- a folder input (an HF dataset or model folder) is every regular file under it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kamado.config import input_paths
from kamado.pipeline import current

if TYPE_CHECKING:
    from kamado.recipe import Recipe

SAMPLE_ABOVE = 64 << 20  # bytes: larger files are hashed on samples
SAMPLE_BLOCK = 1 << 20  # bytes in each of the head, middle and tail samples
CACHE_FILE = ".input-hashes.json"


def stage_input_paths(recipe: Recipe, stage: str) -> list[tuple[str, str]]:
    """(recipe key, path or glob) of every file or folder the stage reads from outside the workdir's stages: the
    path fields (kamado.config.path_field) of its section and of the sections it also covers (release: eval)."""
    names = (stage, *current().spec(stage).also_covers)
    return [item for name in names for item in input_paths(getattr(recipe, name), name)]


def expand(recipe: Recipe, stage: str) -> list[str]:
    """The files behind the stage's inputs (globs expanded, folders walked), in a stable order."""
    import glob

    own_tokens = os.path.realpath(os.path.join(recipe.workdir, "tokenizer", "tokens", "index.json"))
    files: list[str] = []
    for _key, pattern in stage_input_paths(recipe, stage):
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        for m in matches:
            if os.path.realpath(m) == own_tokens:  # this run's tokenizer output: the upstream marker covers it
                continue
            if os.path.isdir(m):
                files += sorted(str(f) for f in Path(m).rglob("*") if f.is_file())
            else:
                files.append(m)  # a missing file is recorded as missing: it appearing later redoes the stage
    return list(dict.fromkeys(files))


class InputHasher:
    """Content hashes of input files, cached by (path, size, mtime) in the workdir."""

    def __init__(self, workdir: Path):
        self.cache_path = workdir / CACHE_FILE
        self.cache: dict[str, str] | None = None
        self.dirty = False

    def _load(self) -> dict[str, str]:
        if self.cache is None:
            try:
                self.cache = json.loads(self.cache_path.read_text())
            except (OSError, ValueError):  # no cache yet, or a torn one: it is only a cache
                self.cache = {}
        return self.cache

    def identities(self, paths: list[str]) -> dict[str, dict[str, Any]]:
        """identity() of each path; files not in the cache are hashed on a few threads (hashlib releases the
        GIL), so the first fingerprint of a corpus of many files is bound by the disk, not one core."""
        from concurrent.futures import ThreadPoolExecutor

        self._load()
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return dict(zip(paths, pool.map(self.identity, paths)))

    def identity(self, path: str) -> dict[str, Any]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {"missing": True}
        sampled = st.st_size > SAMPLE_ABOVE
        key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
        cache = self._load()
        digest = cache.get(key)
        if digest is None:
            digest = content_hash(path, st.st_size)
            cache[key] = digest
            self.dirty = True
        ident: dict[str, Any] = {"size": st.st_size, "blake2b": digest}
        if sampled:
            ident.update(sampled=True, mtime_ns=st.st_mtime_ns)
        return ident

    def save(self) -> None:
        """Write new hashes back (temp + rename; several Slurm tasks may do it at once: the last one wins)."""
        if not self.dirty or not self.cache_path.parent.is_dir():
            return
        tmp = self.cache_path.with_name(f"{CACHE_FILE}.{socket.gethostname()}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.cache, indent=0, sort_keys=True))
        os.replace(tmp, self.cache_path)
        self.dirty = False


def content_hash(path: str, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size <= SAMPLE_ABOVE:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f"sampled:{size}:".encode())
            for offset in (0, size // 2 - SAMPLE_BLOCK // 2, size - SAMPLE_BLOCK):
                fh.seek(offset)
                h.update(fh.read(SAMPLE_BLOCK))
    return h.hexdigest()
