"""Streaming readers: JSONL (.gz/.zst), Parquet, Hugging Face datasets saved to disk, plain-text folders, WARC.

Each reader yields `(Location, doc)` or `(Location, Rejected)` one record at a time (constant memory per shard:
compressed files are streamed, Parquet and Arrow are read batch by batch, one JSONL line is never read past the
size limit). A document is {"id", "text", "meta"}. A record that cannot become one is never an exception that
stops the shard and never silently skipped: it comes back as `Rejected(reason, detail)` naming the field, and the
shard runner writes it with its file and line to the rejects file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Union

from kamado.corpus.html import decode_bytes, html_to_text, looks_like_html

DEFAULT_MAX_RECORD_BYTES = 10_000_000
FORMATS = ("auto", "jsonl", "parquet", "hf", "text", "warc")
def _truncation_errors() -> tuple:
    import zstandard

    return (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError)


_TRUNCATED = _truncation_errors()  # what a cut .gz / .zst raises mid-stream


class BadRecord(ValueError):
    """A record that cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class Location:
    path: str
    line: int  # JSONL: line number; Parquet/Arrow: row number; WARC: record number; text folder: 1


@dataclass(frozen=True)
class Rejected:
    reason: str  # short key, reported as `rejected:<reason>`
    detail: str  # what was wrong, naming the field


Record = tuple[Location, Union[dict, Rejected]]


# ------------------------------------------------------------------ opening files
def open_text(path: str) -> IO[str]:
    """Open plain, .gz or .zst text for streaming reads."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8")


def open_binary(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        # BufferedReader: zstandard's reader has no readline
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def detect_format(path: str) -> str:
    p = path.lower()
    if os.path.isdir(path):
        return "hf" if (Path(path) / "state.json").is_file() else "text"
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".warc", ".warc.gz", ".arc.gz")):
        return "warc"
    if p.endswith((".txt", ".txt.gz", ".txt.zst")):
        return "text"
    return "jsonl"


def source_files(paths: list[str], fmt: str = "auto") -> list[str]:
    """Files or globs (and folders: an HF dataset, or a folder of text files) → the inputs, in a stable order."""
    import glob

    out: list[str] = []
    for pattern in paths:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        for m in matches:
            if os.path.isfile(m):
                out.append(m)
            elif os.path.isdir(m):
                if (fmt in ("auto", "hf")) and (Path(m) / "state.json").is_file():
                    out.append(m)
                else:  # a plain-text folder: every file under it
                    out.extend(sorted(str(f) for f in Path(m).rglob("*") if f.is_file()))
    return out


# ------------------------------------------------------------------ the document check every reader shares
def make_doc(record: object, text_field: str, id_field: str, fallback_id: str, source: str,
             url_field: str = "url", html: str = "auto") -> dict | Rejected:
    if not isinstance(record, dict):
        return Rejected("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    text = record.get(text_field)
    if not isinstance(text, str):
        got = "missing" if text_field not in record else type(text).__name__
        return Rejected("missing_text", f"field '{text_field}' must be a string ({got})")
    if html == "always" or (html == "auto" and looks_like_html(text)):
        text = html_to_text(text)
        if not text.strip():
            return Rejected("empty", f"field '{text_field}': no text left after HTML extraction")
    if not text.strip():
        return Rejected("empty", f"field '{text_field}' is empty")
    doc_id = record.get(id_field)
    doc_id = str(doc_id) if doc_id is not None else fallback_id
    meta = {k: v for k, v in record.items() if k not in (text_field, id_field)}
    meta["source"] = source
    if url_field in record and isinstance(record[url_field], str):
        meta["url"] = record[url_field]
    return {"id": doc_id, "text": text, "meta": meta}


# ------------------------------------------------------------------ JSONL
def _read_line(fh: IO[bytes], limit: int) -> tuple[bytes, bool]:
    """One line, never holding more than `limit` bytes of it: (line or its head, too_large)."""
    line = fh.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, False
    while True:  # skip the rest of an oversized line in bounded chunks
        rest = fh.readline(1 << 20)
        if not rest or rest.endswith(b"\n"):
            return line, True


def iter_jsonl(path: str, text_field: str = "text", id_field: str = "id", source: str = "",
               url_field: str = "url", html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[Record]:
    line_no = 0
    with open_binary(path) as fh:
        while True:
            try:
                raw, too_large = _read_line(fh, max_record_bytes)
            except _TRUNCATED as exc:  # a truncated .gz/.zst: count the lost tail once, keep what came before
                yield Location(path, line_no + 1), Rejected("truncated_file", f"compressed stream ends early ({exc})")
                return
            if not raw:
                return
            line_no += 1
            loc = Location(path, line_no)
            if too_large:
                yield loc, Rejected("too_large", f"record longer than {max_record_bytes:,} bytes")
                continue
            if not raw.strip():
                continue  # a blank line holds no record
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield loc, Rejected("invalid_utf8", f"byte {exc.start}: {exc.reason}")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield loc, Rejected("invalid_json", f"not valid JSON ({exc.msg}, column {exc.colno})")
                continue
            yield loc, make_doc(record, text_field, id_field, f"{path}:{line_no}", source, url_field, html)


def read_jsonl(path: str, text_field: str = "text", id_field: str = "id", source: str = "") -> Iterator[tuple[Location, dict]]:
    """Strict JSONL: yield (location, document); a bad record raises BadRecord naming file:line and field."""
    for loc, doc in iter_jsonl(path, text_field, id_field, source, html="never"):
        if isinstance(doc, Rejected):
            raise BadRecord(f"{loc.path}:{loc.line}: {doc.detail}")
        yield loc, doc


# ------------------------------------------------------------------ Parquet and Arrow (HF save_to_disk)
def _iter_rows(batches, path: str, text_field: str, id_field: str, source: str, url_field: str, html: str,
               max_record_bytes: int) -> Iterator[Record]:
    row = 0
    for batch in batches:
        for record in batch.to_pylist():
            row += 1
            loc = Location(path, row)
            text = record.get(text_field) if isinstance(record, dict) else None
            if isinstance(text, str) and len(text) > max_record_bytes // 4 and len(text.encode("utf-8")) > max_record_bytes:
                yield loc, Rejected("too_large", f"field '{text_field}' longer than {max_record_bytes:,} bytes")
                continue
            yield loc, make_doc(record, text_field, id_field, f"{path}:{row}", source, url_field, html)


def iter_parquet(path: str, text_field: str = "text", id_field: str = "id", source: str = "", url_field: str = "url",
                 html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, batch_size: int = 256) -> Iterator[Record]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        yield from _iter_rows(pf.iter_batches(batch_size=batch_size), path, text_field, id_field, source, url_field,
                              html, max_record_bytes)


def iter_hf_disk(folder: str, text_field: str = "text", id_field: str = "id", source: str = "", url_field: str = "url",
                 html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[Record]:
    """A `Dataset.save_to_disk` folder, read with pyarrow alone: its Arrow stream files are memory-mapped and
    walked batch by batch, so neither the `datasets` package nor the whole table is needed in memory."""
    import pyarrow as pa

    state = json.loads((Path(folder) / "state.json").read_text())
    for entry in state.get("_data_files", []):
        path = str(Path(folder) / entry["filename"])
        with pa.memory_map(path) as src:
            reader = pa.ipc.open_stream(src)
            yield from _iter_rows(reader, path, text_field, id_field, source, url_field, html, max_record_bytes)


# ------------------------------------------------------------------ plain text folders
def iter_text_file(path: str, root: str = "", source: str = "", html: str = "auto",
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[Record]:
    """One file is one document; its encoding is detected (UTF-8, Shift_JIS, EUC-JP ...)."""
    loc = Location(path, 1)
    try:
        with open_binary(path) as fh:
            data = fh.read(max_record_bytes + 1)
    except _TRUNCATED as exc:
        yield loc, Rejected("truncated_file", f"compressed stream ends early ({exc})")
        return
    if len(data) > max_record_bytes:
        yield loc, Rejected("too_large", f"file longer than {max_record_bytes:,} bytes")
        return
    text, encoding = decode_bytes(data)
    if text is None:
        yield loc, Rejected("invalid_encoding", "no text encoding fits the bytes")
        return
    doc_id = os.path.relpath(path, root) if root else path
    yield loc, make_doc({"text": text, "encoding": encoding, "path": path}, "text", "_", doc_id, source, html=html)


# ------------------------------------------------------------------ WARC
_TEXT_TYPES = ("text/html", "text/plain", "application/xhtml+xml", "application/xml", "text/xml")


def iter_warc(path: str, source: str = "", html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[Record]:
    """`response` and `resource` records of a .warc or .warc.gz; HTML goes through charset detection and
    extraction. Request, metadata and warcinfo records are not documents and are not counted."""
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as fh:
        it = iter(ArchiveIterator(fh))
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return
            except Exception as exc:  # warcio raises its own errors on a truncated or corrupt file
                yield Location(path, n + 1), Rejected("truncated_file", f"WARC stream ends or breaks ({exc})")
                return
            if rec.rec_type not in ("response", "resource"):
                continue
            n += 1
            loc = Location(path, n)
            uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
            if rec.rec_type == "response" and rec.http_headers is not None:
                status = rec.http_headers.get_statuscode() or ""
                ctype = rec.http_headers.get_header("Content-Type") or ""
                if not status.startswith("2"):
                    yield loc, Rejected("http_status", f"{uri}: HTTP status {status}")
                    continue
            else:
                ctype = rec.rec_headers.get_header("Content-Type") or ""
            mime = ctype.split(";")[0].strip().lower()
            if mime and mime not in _TEXT_TYPES:
                yield loc, Rejected("not_text", f"{uri}: content type {mime}")
                continue
            try:
                data = rec.content_stream().read(max_record_bytes + 1)
            except Exception as exc:
                yield loc, Rejected("truncated_file", f"{uri}: record body ends early ({exc})")
                return
            if len(data) > max_record_bytes:
                yield loc, Rejected("too_large", f"{uri}: body longer than {max_record_bytes:,} bytes")
                continue
            declared = ctype.split("charset=")[1].strip().strip('"') if "charset=" in ctype.lower() else None
            text, encoding = decode_bytes(data, declared)
            if text is None:
                yield loc, Rejected("invalid_encoding", f"{uri}: no text encoding fits the body")
                continue
            is_html = html == "always" or (html == "auto" and (mime in ("text/html", "application/xhtml+xml") or looks_like_html(text)))
            record = {"text": text, "id": rec.rec_headers.get_header("WARC-Record-ID") or f"{path}:{n}",
                      "url": uri, "content_type": mime, "encoding": encoding}
            yield loc, make_doc(record, "text", "id", f"{path}:{n}", source, "url", "always" if is_html else "never")


# ------------------------------------------------------------------ one entry point per source
def iter_source_file(path: str, fmt: str, text_field: str, id_field: str, source: str, url_field: str = "url",
                     html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, root: str = "") -> Iterator[Record]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        return iter_jsonl(path, text_field, id_field, source, url_field, html, max_record_bytes)
    if fmt == "parquet":
        return iter_parquet(path, text_field, id_field, source, url_field, html, max_record_bytes)
    if fmt == "hf":
        return iter_hf_disk(path, text_field, id_field, source, url_field, html, max_record_bytes)
    if fmt == "text":
        return iter_text_file(path, root, source, html, max_record_bytes)
    if fmt == "warc":
        return iter_warc(path, source, html, max_record_bytes)
    raise ValueError(f"unknown corpus format {fmt!r} (known: {', '.join(FORMATS)})")


def has_a_record(path: str, fmt: str = "auto") -> bool:
    """Cheap check for `check_inputs`: does this input hold anything at all?"""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        try:
            with open_binary(path) as fh:
                return any(line.strip() for line in fh)
        except _TRUNCATED:
            return True  # a truncated file still holds records (and its tail is reported as rejected)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows > 0
    if fmt == "hf":
        return any(Path(path).glob("*.arrow"))
    return os.path.getsize(path) > 0
