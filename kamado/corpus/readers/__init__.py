"""Streaming readers: JSONL (.gz/.zst), Parquet, Hugging Face datasets saved to disk, plain-text folders, WARC.

Each reader yields `(Location, doc)` or `(Location, Rejected)` one record at a time (constant memory per shard:
compressed files are streamed, Parquet and Arrow are read batch by batch, one JSONL line is never read past the
size limit). A document is {"id", "text", "meta"}. A record that cannot become one is never an exception that
stops the shard and never silently skipped: it comes back as `Rejected(reason, detail)` naming the field, and the
shard runner writes it with its file and line to the rejects file. Errors that are not about one bad record (a
bug, an unreadable disk) are not caught: they stop the shard.

A reader can also read one slice of a file (kamado.corpus.plan cuts large inputs): a byte range of uncompressed
JSONL/WARC that starts at a record boundary, a run of zstd frames, Parquet row groups or a row range of a
Hugging Face dataset. `first` is the number of records before the slice, so line/record numbers (and the ids and
input order built from them) are the same as when the whole file is read.

Modules: records (Location, Rejected, the document check), files (opening plain/.gz/.zst, formats, source
files), jsonl, arrow (Parquet, HF datasets), text, warc. Every public name is importable from here.
"""

from __future__ import annotations

import os
from typing import Iterator

from kamado.corpus.readers.arrow import HF_BATCH_ROWS, iter_hf_disk, iter_parquet, load_hf_disk
from kamado.corpus.readers.files import (TRUNCATED, SymlinkOutsideSource, detect_format, open_binary, open_text,
                                         source_files)
from kamado.corpus.readers.jsonl import iter_jsonl, read_jsonl
from kamado.corpus.readers.records import (DEFAULT_MAX_RECORD_BYTES, BadRecord, Location, Record, Rejected,
                                           make_doc)
from kamado.corpus.readers.text import iter_text_file
from kamado.corpus.readers.warc import iter_warc

FORMATS = ("auto", "jsonl", "parquet", "hf", "text", "warc")

__all__ = ["DEFAULT_MAX_RECORD_BYTES", "FORMATS", "HF_BATCH_ROWS", "BadRecord", "Location", "Record", "Rejected",
           "SymlinkOutsideSource", "detect_format", "has_a_record", "iter_hf_disk", "iter_jsonl", "iter_parquet",
           "iter_source_file", "iter_text_file", "iter_warc", "load_hf_disk", "make_doc", "open_binary", "open_text",
           "read_jsonl", "source_files"]


def iter_source_file(path: str, fmt: str, text_field: str, id_field: str, source: str, url_field: str = "url",
                     html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, root: str = "",
                     part: tuple[str, int, int, int] | None = None) -> Iterator[Record]:
    """Every record of one input, or of one planned part of it: (kind, start, end, records before it) with kind
    "bytes" (JSONL/WARC byte range, or zstd frames), "row_groups" (Parquet) or "rows" (HF dataset)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    kind, a, b, first = part if part is not None else ("file", 0, 0, 0)
    span = (a, b) if kind == "bytes" else None
    if kind not in ("file", "bytes", "row_groups", "rows") or (kind == "bytes" and fmt not in ("jsonl", "warc")) \
            or (kind == "row_groups" and fmt != "parquet") or (kind == "rows" and fmt != "hf"):
        raise ValueError(f"{path}: a {fmt} input cannot be read as a {kind!r} part")
    if fmt == "jsonl":
        return iter_jsonl(path, text_field, id_field, source, url_field, html, max_record_bytes, span, first)
    if fmt == "parquet":
        return iter_parquet(path, text_field, id_field, source, url_field, html, max_record_bytes,
                            row_groups=(a, b) if kind == "row_groups" else None, first=first)
    if fmt == "hf":
        return iter_hf_disk(path, text_field, id_field, source, url_field, html, max_record_bytes,
                            rows=(a, b) if kind == "rows" else None)
    if fmt == "text":
        return iter_text_file(path, root, source, html, max_record_bytes)
    if fmt == "warc":
        return iter_warc(path, source, html, max_record_bytes, span, first)
    raise ValueError(f"unknown corpus format {fmt!r} (known: {', '.join(FORMATS)})")


def has_a_record(path: str, fmt: str = "auto") -> bool:
    """Cheap check for `check_inputs`: does this input hold anything at all?"""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        try:
            with open_binary(path) as fh:
                return any(line.strip() for line in fh)
        except TRUNCATED:
            return True  # a truncated file still holds records (and its tail is reported as rejected)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows > 0
    if fmt == "hf":
        return load_hf_disk(path).num_rows > 0
    return os.path.getsize(path) > 0
