"""The corpus stage's shard plan: which slices of which inputs each shard reads, decided once from the inputs.

Every input is cut into parts at record boundaries where its format allows it cheaply:
- uncompressed JSONL: byte ranges that start at a line start (a slice owns the lines that start inside it);
- uncompressed WARC: byte ranges that start at a record (found by walking the record headers, bodies skipped);
- .zst with several frames: runs of whole frames, cut only where a frame ends at a line end;
- Parquet: runs of row groups; Hugging Face dataset folders: row ranges;
- anything else (a .gz, a .warc.gz, a single-frame .zst, a text file) is one part.
Each part knows how many records come before it in its file, so line/record numbers, fallback ids and
`meta.order` (source, file, line) are the same as when the file is read whole: the corpus report does not depend
on the number of shards. Parts are about total/(4·shards) bytes (at most `max_slice_bytes`); the list of parts
in input order is cut into `num_shards` contiguous runs of about equal bytes, so shard k's documents all come
before shard k+1's, and a shard opens only its own slices.

The plan is a pure function of the inputs and `num_shards`; `ensure_plan` writes it once to `work/plan.json`
(under the workdir lock, temp + fsync + rename) for whichever process gets there first: the local stage, or the
first Slurm array task.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from kamado.corpus.readers import detect_format, load_hf_disk, source_files
from kamado.stage import write_json_atomic

PLAN_VERSION = 1
DEFAULT_MAX_SLICE_BYTES = 1 << 30  # a part is never larger than this (when its format can be cut)
DEFAULT_MIN_SLICE_BYTES = 1 << 20  # ... and never cut smaller than this: opening a slice has a (small) cost
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Slice:
    shard: int
    source: int  # index in corpus.sources
    file: int  # index in the source's file list: meta.order[1]
    path: str
    fmt: str  # jsonl | parquet | hf | text | warc
    kind: str  # file | bytes | row_groups | rows
    start: int = 0  # bytes: offset; row_groups: first group; rows: first row
    end: int = 0  # exclusive
    first: int = 0  # records (lines, WARC documents, rows) in the file before this slice
    nbytes: int = 0

    @property
    def part(self) -> tuple[str, int, int, int] | None:
        return None if self.kind == "file" else (self.kind, self.start, self.end, self.first)


# ------------------------------------------------------------------ cutting one input into parts
def _cut_targets(size: int, piece: int) -> list[int]:
    return list(range(piece, size, piece))


def _jsonl_parts(path: str, size: int, piece: int) -> list[tuple[int, int, int]]:
    """(start, end, lines before) of byte ranges starting at line starts near each multiple of `piece`; one pass
    that counts newlines (the line numbers of later slices need it)."""
    targets = _cut_targets(size, piece)
    cuts: list[tuple[int, int]] = [(0, 0)]
    lines = pos = 0
    t = 0
    with open(path, "rb") as fh:
        while t < len(targets):
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            while t < len(targets) and targets[t] <= pos + len(chunk):
                # a line starts right after a newline: the first newline at or after target-1
                nl = chunk.find(b"\n", max(targets[t] - 1 - pos, 0))
                if nl < 0:
                    break  # this line goes on into the next chunk
                cut = pos + nl + 1
                if cut < size and cut > cuts[-1][0]:
                    cuts.append((cut, lines + chunk.count(b"\n", 0, nl + 1)))
                while t < len(targets) and targets[t] <= cut:
                    t += 1
            lines += chunk.count(b"\n")
            pos += len(chunk)
            if t < len(targets) and targets[t] < pos:
                targets[t] = pos  # the search for this cut goes on in the next chunk
    bounds = [c for c, _ in cuts] + [size]
    return [(bounds[i], bounds[i + 1], cuts[i][1]) for i in range(len(cuts))]


def _warc_records(fh, size: int):
    """(offset, is a document) of each record of an uncompressed WARC, reading only the headers. Stops silently at
    anything it does not understand: the rest of the file then stays in the last part (the reader reports it)."""
    pos = 0
    while pos < size:
        fh.seek(pos)
        head = fh.read(4096)  # most header blocks fit; a longer one is read again, once
        end = head.find(b"\r\n\r\n")
        if end < 0:
            fh.seek(pos)
            head = fh.read(1 << 16)
            end = head.find(b"\r\n\r\n")
        if not head.startswith(b"WARC/") or end < 0:
            return
        length = wtype = None
        for line in head[:end].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value.strip()) if value.strip().isdigit() else None
            elif key == b"warc-type":
                wtype = value.strip()
        if length is None:
            return
        yield pos, wtype in (b"response", b"resource")
        nxt = pos + end + 4 + length
        if nxt > size:
            return
        fh.seek(nxt)
        gap = fh.read(64)
        skipped = len(gap) - len(gap.lstrip(b"\r\n"))
        pos = nxt + skipped


def _warc_parts(path: str, size: int, piece: int) -> list[tuple[int, int, int]]:
    targets = _cut_targets(size, piece)
    cuts: list[tuple[int, int]] = [(0, 0)]
    docs = t = 0
    with open(path, "rb") as fh:
        for offset, is_doc in _warc_records(fh, size):
            if t < len(targets) and offset >= targets[t] and offset > 0:
                cuts.append((offset, docs))
                while t < len(targets) and targets[t] <= offset:
                    t += 1
            docs += is_doc
    bounds = [c for c, _ in cuts] + [size]
    return [(bounds[i], bounds[i + 1], cuts[i][1]) for i in range(len(cuts))]


def _zstd_frames(fh, size: int) -> list[tuple[int, int]] | None:
    """(start, end) of each frame of a .zst from the frame and block headers alone (nothing decompressed);
    None when the file holds something else."""
    frames, pos = [], 0
    while pos < size:
        fh.seek(pos)
        magic = fh.read(4)
        if len(magic) < 4:
            return None
        (m,) = struct.unpack("<I", magic)
        if 0x184D2A50 <= m <= 0x184D2A5F:  # a skippable frame
            (n,) = struct.unpack("<I", fh.read(4))
            pos += 8 + n
            frames.append((pos - 8 - n, pos))
            continue
        if m != 0xFD2FB528:
            return None
        fhd = fh.read(1)[0]
        single = (fhd >> 5) & 1
        header = 1 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + ((1 if single else 0), 2, 4, 8)[fhd >> 6]
        p = pos + 4 + header
        while True:
            fh.seek(p)
            raw = fh.read(3)
            if len(raw) < 3:
                return None
            h = int.from_bytes(raw, "little")
            last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
            if btype == 3:
                return None
            p += 3 + (1 if btype == 1 else bsize)
            if last:
                break
        p += 4 if (fhd >> 2) & 1 else 0  # content checksum
        if p > size:
            return None
        frames.append((pos, p))
        pos = p
    return frames


def _zstd_parts(path: str, size: int, piece: int) -> list[tuple[int, int, int]]:
    """Runs of frames, cut only where a frame ends with a newline (a frame boundary inside a line is no cut)."""
    import zstandard

    with open(path, "rb") as fh:
        frames = _zstd_frames(fh, size)
        if not frames or len(frames) < 2:
            return [(0, size, 0)]
        cuts: list[tuple[int, int]] = [(0, 0)]
        lines, target, last = 0, piece, b"\n"  # last: the last byte so far (a cut needs a line end)
        for start, end in frames:
            fh.seek(start)
            if struct.unpack("<I", fh.read(4))[0] != 0xFD2FB528:
                return [(0, size, 0)]  # skippable frames: read whole
            fh.seek(start)
            obj, left = zstandard.ZstdDecompressor().decompressobj(), end - start
            while left > 0:  # in chunks: a frame may be large
                data = obj.decompress(fh.read(min(left, 1 << 20)))
                left -= min(left, 1 << 20)
                lines += data.count(b"\n")
                last = data[-1:] or last
            if end >= target and end < size and last == b"\n":
                cuts.append((end, lines))
                target = end + piece
    bounds = [c for c, _ in cuts] + [size]
    return [(bounds[i], bounds[i + 1], cuts[i][1]) for i in range(len(cuts))]


def _parquet_parts(path: str, piece: int) -> list[tuple[int, int, int, int]]:
    """(first group, end group, rows before, bytes) of runs of row groups of about `piece` bytes."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    parts, start, rows, run_rows, run_bytes = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        run_rows += rg.num_rows
        run_bytes += rg.total_byte_size
        if run_bytes >= piece or g == meta.num_row_groups - 1:
            parts.append((start, g + 1, rows, run_bytes))
            start, rows, run_rows, run_bytes = g + 1, rows + run_rows, 0, 0
    return parts


def _input_bytes(path: str, fmt: str) -> int:
    if fmt == "hf":
        return sum(f.stat().st_size for f in Path(path).glob("*.arrow")) or 1
    return max(os.path.getsize(path), 1)


def _parts(path: str, fmt: str, size: int, piece: int) -> list[tuple[str, int, int, int, int]]:
    """(kind, start, end, records before, bytes) of each part of one input, in order."""
    lower = path.lower()
    if size > piece:
        if fmt in ("jsonl", "warc") and not lower.endswith((".gz", ".zst")):
            cut = _jsonl_parts if fmt == "jsonl" else _warc_parts
            parts = cut(path, size, piece)
            if len(parts) > 1:
                return [("bytes", a, b, first, b - a) for a, b, first in parts]
        elif fmt == "jsonl" and lower.endswith(".zst"):
            parts = _zstd_parts(path, size, piece)
            if len(parts) > 1:
                return [("bytes", a, b, first, b - a) for a, b, first in parts]
        elif fmt == "parquet":
            groups = _parquet_parts(path, piece)
            if len(groups) > 1:
                return [("row_groups", a, b, first, max(n, 1)) for a, b, first, n in groups]
        elif fmt == "hf":
            rows = load_hf_disk(path).num_rows
            per = max(1, rows * piece // size)
            return [("rows", a, min(a + per, rows), a, max(1, size * (min(a + per, rows) - a) // max(rows, 1)))
                    for a in range(0, rows, per)] or [("file", 0, 0, 0, size)]
    return [("file", 0, 0, 0, size)]


# ------------------------------------------------------------------ the plan
def make_plan(sources: list, num_shards: int, max_slice_bytes: int | None = None,
              min_slice_bytes: int | None = None) -> list[Slice]:
    """The slices of every input, each assigned to one of `num_shards` shards (contiguous runs in input order,
    balanced by bytes). `sources`: the recipe's corpus.sources (paths, format, follow_symlinks). Slice sizes
    default to the module's DEFAULT_MAX/MIN_SLICE_BYTES (read at call time: tests make them small)."""
    max_slice_bytes = DEFAULT_MAX_SLICE_BYTES if max_slice_bytes is None else max_slice_bytes
    min_slice_bytes = DEFAULT_MIN_SLICE_BYTES if min_slice_bytes is None else min_slice_bytes
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    inputs = []  # (source, file, path, fmt, bytes)
    for s_idx, source in enumerate(sources):
        files = source_files(source.paths, source.format, getattr(source, "follow_symlinks", False))
        for f_idx, path in enumerate(files):
            fmt = detect_format(path) if source.format == "auto" else source.format
            inputs.append((s_idx, f_idx, path, fmt, _input_bytes(path, fmt)))
    piece = max_slice_bytes if num_shards == 1 else \
        min(max_slice_bytes, max(min_slice_bytes, sum(i[-1] for i in inputs) // (4 * num_shards)))
    parts = [(s, f, path, fmt, *p) for s, f, path, fmt, size in inputs for p in _parts(path, fmt, size, piece)]
    total = sum(p[-1] for p in parts)
    # contiguous runs: a part goes to the shard its byte midpoint falls in
    slices: list[Slice] = []
    done = 0
    for s, f, path, fmt, kind, a, b, first, nbytes in parts:
        shard = min(num_shards - 1, (2 * done + nbytes) * num_shards // (2 * max(total, 1)))
        done += nbytes
        prev = slices[-1] if slices else None
        if prev and prev.kind == kind != "file" and (prev.shard, prev.path) == (shard, path) and prev.end == a:
            slices[-1] = Slice(shard, s, f, path, fmt, kind, prev.start, b, prev.first, prev.nbytes + nbytes)
        else:
            slices.append(Slice(shard, s, f, path, fmt, kind, a, b, first, nbytes))
    return slices


def plan_path(work: Path) -> Path:
    return work / "plan.json"


def write_plan(path: Path, num_shards: int, slices: list[Slice]) -> None:
    """temp (+ fsync) + rename: a plan on disk is always complete."""
    per_shard = [0] * num_shards
    for sl in slices:
        per_shard[sl.shard] += sl.nbytes
    body = {"version": PLAN_VERSION, "num_shards": num_shards, "bytes_per_shard": per_shard,
            "fields": list(Slice.__dataclass_fields__), "slices": [list(asdict(sl).values()) for sl in slices]}
    write_json_atomic(path, body)


_READ: dict = {}  # (path, mtime, size) -> slices: the shards of one process (pool worker) parse the plan once


def read_plan(path: Path, num_shards: int) -> list[Slice]:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, num_shards)
    if key not in _READ:
        _READ.clear()
        _READ[key] = _parse_plan(path, num_shards)
    return _READ[key]


def _parse_plan(path: Path, num_shards: int) -> list[Slice]:
    body = json.loads(path.read_text(encoding="utf-8"))
    if body.get("version") != PLAN_VERSION or body.get("num_shards") != num_shards \
            or body.get("fields") != list(Slice.__dataclass_fields__):
        raise RuntimeError(f"{path} was planned for {body.get('num_shards')} shards (plan version "
                           f"{body.get('version')}), not {num_shards}: delete the corpus stage folder to start over")
    return [Slice(*row) for row in body["slices"]]


def ensure_plan(recipe, ws, num_shards: int) -> list[Slice]:
    """The stage's plan: read it, or make and write it (once: under the workdir lock, so concurrent Slurm array
    tasks agree on one plan)."""
    path = plan_path(ws.stage_dir("corpus") / "work")
    if not path.is_file():
        with ws.lock():
            if not path.is_file():
                write_plan(path, num_shards, make_plan(recipe.corpus.sources, num_shards))
    return read_plan(path, num_shards)
