"""Character n-gram hashing and MinHash signatures, vectorised with numpy.

Why our own and not rensa/datasketch: both take shingles as Python strings one by one, and building those is
~80% of the time (anchor notes). Here a document becomes one uint32 array of code points and every n-gram hash
is a few whole-array operations; the 200 permutations are `a·x + b mod 2^32` (odd `a`: a bijection of the
32-bit space) applied to a [perms, chunk] block at a time, so memory per document is bounded by the chunk.
The block is [perms, chunk], not [chunk, perms]: the minimum then runs along contiguous memory, and with 8192
shingles a chunk that was 3-4x faster than the [4096, perms] layout (2M shingles: ~0.2 s instead of ~0.7 s).
benchmarks/dedup_quality.py compares recall, precision and time with rensa and datasketch in the same run.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finalizer constants: every output bit depends on every input bit
_M2 = np.uint64(0x94D049BB133111EB)
_P = np.uint64(0x100000001B3)  # FNV prime: the polynomial that combines n code points
_EMPTY = np.empty(0, dtype=np.uint64)
CHUNK = 8192  # shingles per [perms, chunk] block: 6.5 MB of uint32 at 200 permutations
_MAX = np.iinfo(np.uint32).max


def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """64-bit hashes of every character n-gram of `text` (repeats kept).

    Rule for short text: a text shorter than n characters is one shingle (itself), so a short document still
    matches its exact copies and nothing else; an empty text has no shingle and takes no part in near dedup."""
    if not text:
        return _EMPTY
    c = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = min(n, len(c))
    m = len(c) - n + 1
    h = c[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            h *= _P
            h += c[k:k + m]
        h += np.uint64(n)  # the length takes part: a short text's one shingle is not a prefix-like n-gram
        return mix64(h)


def _cpus() -> int:
    """CPUs this process may run on (a Slurm task's allocation, not the node's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class MinHasher:
    """`num_perm` MinHash values (uint32) per document over the top 32 bits of the shingle hashes.

    The permutations are split into `threads` groups (default: 2 when this process may use two CPUs), each
    computed by its own thread over every document: numpy's multiply/add/minimum release the GIL, so on two
    CPUs the Aozora near-dup set's 4.3M shingles take ~0.16 s instead of ~0.22 s. Each group writes its own
    columns of the result, so the values are the same whatever the number of threads."""

    def __init__(self, num_perm: int, seed: int, threads: int | None = None):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, 2**32, num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
        threads = max(1, min(threads or min(2, _cpus()), num_perm))
        bounds = np.linspace(0, num_perm, threads + 1).astype(int)
        self._groups = [_Permutations(self.a[lo:hi], self.b[lo:hi], slice(lo, hi))
                        for lo, hi in zip(bounds[:-1], bounds[1:])]

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        return self.signatures([hashes])[0] if len(hashes) else np.full(self.num_perm, _MAX, dtype=np.uint32)

    def signatures(self, docs: list[np.ndarray]) -> np.ndarray:
        """[len(docs), num_perm]; a document without shingles gets all-max values (no band key: see phases)."""
        out = np.empty((len(docs), self.num_perm), dtype=np.uint32)
        x32 = [(h >> np.uint64(32)).astype(np.uint32) for h in docs]
        if len(self._groups) == 1 or sum(map(len, x32)) < CHUNK:  # a thread's start costs more than it saves
            for group in self._groups:
                group.fill(x32, out)
        else:
            with ThreadPoolExecutor(len(self._groups)) as pool:
                list(pool.map(lambda group: group.fill(x32, out), self._groups))
        return out


class _Permutations:
    """A group of the permutations `a·x + b mod 2^32` (odd `a`: a bijection of the 32-bit space) with its own
    [perms, CHUNK] buffer: one thread computes the group's columns of the signatures."""

    def __init__(self, a: np.ndarray, b: np.ndarray, columns: slice):
        self.a, self.b, self.columns = a[:, None], b[:, None], columns
        self._buf = np.empty((len(a), CHUNK), dtype=np.uint32)

    def _permuted(self, x32: np.ndarray) -> np.ndarray:
        """[perms, len(x32)] block of a·x + b (wrapping mod 2^32: that is the permutation), in the buffer."""
        block = self._buf[:, : len(x32)]
        np.multiply(self.a, x32[None, :], out=block)
        np.add(block, self.b, out=block)
        return block

    def _signature(self, x32: np.ndarray) -> np.ndarray:
        sig = np.full(len(self.a), _MAX, dtype=np.uint32)
        for start in range(0, len(x32), CHUNK):
            np.minimum(sig, self._permuted(x32[start:start + CHUNK]).min(axis=1), out=sig)
        return sig

    def fill(self, x32: list[np.ndarray], out: np.ndarray) -> None:
        """out[:, columns] for every document; short documents are packed into one block, reduced per document."""
        cols = self.columns
        batch: list[int] = []
        size = 0

        def flush() -> None:
            nonlocal size
            if not batch:
                return
            block = self._permuted(np.concatenate([x32[i] for i in batch]))
            starts = np.cumsum([0] + [len(x32[i]) for i in batch[:-1]])
            out[batch, cols] = np.minimum.reduceat(block, starts, axis=1).T
            batch.clear()
            size = 0

        for i, x in enumerate(x32):
            if len(x) == 0:
                out[i, cols] = _MAX
            elif len(x) > CHUNK // 4:
                out[i, cols] = self._signature(x)
            else:
                if size + len(x) > CHUNK:
                    flush()
                batch.append(i)
                size += len(x)
        flush()


class MinHashBatches:
    """Signatures of documents given one by one, hashed in batches of about `batch_shingles` in a background thread
    (numpy's multiply/add/minimum release the GIL) while the caller prepares the next documents: at most two
    batches in memory, one hashed and one being built. `result()` gives the [docs, num_perm] rows in order."""

    def __init__(self, hasher: MinHasher, batch_shingles: int):
        self.hasher, self.batch_shingles = hasher, batch_shingles
        self._batch: list[np.ndarray] = []
        self._pending = 0
        self._parts: list[np.ndarray | Future] = []
        self._pool = ThreadPoolExecutor(1)

    def add(self, hashes: np.ndarray) -> None:
        self._batch.append(hashes)
        self._pending += len(hashes)
        if self._pending >= self.batch_shingles:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            if self._parts:
                self._parts[-1] = self._parts[-1].result()  # the batch before: done before a third one exists
            self._parts.append(self._pool.submit(self.hasher.signatures, self._batch))
            self._batch = []
        self._pending = 0

    def result(self) -> np.ndarray:
        self._flush()
        parts = [p.result() if isinstance(p, Future) else p for p in self._parts]
        self._pool.shutdown()
        return np.concatenate(parts) if parts else np.zeros((0, self.hasher.num_perm), np.uint32)

    def discard(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._batch, self._parts = [], []


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal MinHash values ([m, perms] → [m])."""
    return (sig_a == sig_b).mean(axis=-1)
