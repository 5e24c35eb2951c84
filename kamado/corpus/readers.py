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

from kamado.corpus.html import HtmlParseError, decode_bytes, html_to_text, looks_like_html

DEFAULT_MAX_RECORD_BYTES = 10_000_000
FORMATS = ("auto", "jsonl", "parquet", "hf", "text", "warc")
HF_BATCH_ROWS = 256


def _truncation_errors() -> tuple:
    import zstandard

    return (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError)


_TRUNCATED = _truncation_errors()  # what a cut .gz / .zst raises mid-stream (EOFError: _ZstdStream's too)


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
    offset: int | None = None  # WARC: the byte where the file breaks (written to the rejects file)


Record = tuple[Location, Union[dict, Rejected]]


# ------------------------------------------------------------------ opening files
class _Span(io.RawIOBase):
    """Bytes [start, end) of a file as a stream that ends at `end` (one planned slice)."""

    def __init__(self, path: str, start: int, end: int):
        self._fh = open(path, "rb")
        self._fh.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        got = self._fh.readinto(memoryview(buf)[:n])
        self._left -= got
        return got

    def close(self) -> None:
        self._fh.close()
        super().close()


class _ZstdStream(io.RawIOBase):
    """Decompressed bytes of every zstd frame in a stream. Unlike zstandard's stream_reader, a stream that ends
    inside a frame raises EOFError (a truncated file is reported, not silently shortened)."""

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._raw, self._dctx = raw, zstandard.ZstdDecompressor()
        self._obj, self._pending, self._in_frame = self._dctx.decompressobj(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 17)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame")
                return 0
            while chunk:
                self._in_frame = True
                self._pending += self._obj.decompress(chunk)
                chunk = b""
                if self._obj.eof:  # frame done: the rest of the chunk starts the next one
                    chunk, self._in_frame = self._obj.unused_data, False
                    self._obj = self._dctx.decompressobj()
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_text(path: str) -> IO[str]:
    """Open plain, .gz or .zst text for streaming reads."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8")


def open_binary(path: str, span: tuple[int, int] | None = None) -> IO[bytes]:
    """A whole file (.gz and .zst decompressed), or bytes [start, end) of it: a slice of an uncompressed file, or
    of a .zst whose frames start at `start` and end at `end`. A .gz is only ever read whole."""
    if span is None:
        raw: IO[bytes] = open(path, "rb")
    elif path.endswith(".gz"):
        raise ValueError(f"{path}: a .gz file is read whole, not as a byte range")
    else:
        raw = io.BufferedReader(_Span(path, *span), 1 << 20)
    if path.endswith(".gz"):
        return gzip.open(raw, "rb")
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdStream(raw), 1 << 20)  # buffered: readline
    return raw


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


class SymlinkOutsideSource(ValueError):
    """A file under a source folder or glob resolves outside it (refused unless `follow_symlinks: true`)."""


def _static_root(pattern: str) -> str:
    """The folder a glob cannot leave: its path up to the first component with a wildcard."""
    import glob

    parts = Path(pattern).parts
    fixed = next((parts[:i] for i, part in enumerate(parts) if glob.has_magic(part)), parts)
    return str(Path(*fixed)) if fixed else "."


def _check_inside(path: str, root: str, follow_symlinks: bool) -> None:
    if follow_symlinks:
        return
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise SymlinkOutsideSource(f"{path} is a link to {real}, outside the source root {root}; set "
                                   f"follow_symlinks: true on the source to read it")


def source_files(paths: list[str], fmt: str = "auto", follow_symlinks: bool = False) -> list[str]:
    """Files or globs (and folders: an HF dataset, or a folder of text files) → the inputs, in a stable order.

    A file named explicitly is read wherever it points. Files found under a folder or by a glob must stay inside
    it (the folder, or the glob's fixed prefix) after links are resolved, and linked folders are not walked,
    unless `follow_symlinks`: a link must not quietly pull data from elsewhere into a corpus."""
    import glob

    out: list[str] = []
    for pattern in paths:
        magic = glob.has_magic(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if magic else [pattern]
        for m in matches:
            if os.path.isfile(m):
                if magic:
                    _check_inside(m, _static_root(pattern), follow_symlinks)
                out.append(m)
            elif os.path.isdir(m):
                if magic:
                    _check_inside(m, _static_root(pattern), follow_symlinks)
                if (fmt in ("auto", "hf")) and (Path(m) / "state.json").is_file():
                    out.append(m)
                    continue
                found = []  # a plain-text folder: every file under it
                for folder, _, names in os.walk(m, followlinks=follow_symlinks):
                    for name in names:
                        f = os.path.join(folder, name)
                        if os.path.isfile(f):
                            if os.path.islink(f):  # linked folders are not walked: only a linked file can leave
                                _check_inside(f, m, follow_symlinks)
                            found.append(str(Path(f)))
                out.extend(sorted(found))
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
        try:
            text = html_to_text(text)
        except HtmlParseError as exc:
            return Rejected("html_parse_error", f"field '{text_field}': {exc}")
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
               url_field: str = "url", html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
               span: tuple[int, int] | None = None, first: int = 0) -> Iterator[Record]:
    """Lines of a file, or of `span` (a planned slice that starts at a line start; `first` lines come before it)."""
    line_no = first
    with open_binary(path, span) as fh:
        while True:
            try:
                raw, too_large = _read_line(fh, max_record_bytes)
            except _TRUNCATED as exc:  # a cut or corrupt .gz/.zst: count the lost tail once, keep what came before
                yield Location(path, line_no + 1), _stream_broken(exc)
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
               max_record_bytes: int, first: int = 0) -> Iterator[Record]:
    row = first
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
                 html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, batch_size: int = 256,
                 row_groups: tuple[int, int] | None = None, first: int = 0) -> Iterator[Record]:
    """Rows of a Parquet file, or of row groups [a, b) (`first`: the rows in the groups before a)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        groups = list(range(*row_groups)) if row_groups is not None else None
        yield from _iter_rows(pf.iter_batches(batch_size=batch_size, row_groups=groups), path, text_field, id_field,
                              source, url_field, html, max_record_bytes, first)


def load_hf_disk(folder: str):
    """A `Dataset.save_to_disk` folder through `datasets` itself (its Arrow files are memory-mapped, not read)."""
    import datasets

    ds = datasets.load_from_disk(folder)
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(f"{folder}: a DatasetDict (splits {sorted(ds)}); name one split's folder as the source path")
    return ds


def iter_hf_disk(folder: str, text_field: str = "text", id_field: str = "id", source: str = "", url_field: str = "url",
                 html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 rows: tuple[int, int] | None = None) -> Iterator[Record]:
    """Rows [a, b) (default: all) of a Hugging Face dataset folder, `HF_BATCH_ROWS` at a time as Arrow tables:
    only one batch is ever Python objects. Row numbers count from the dataset's first row."""
    ds = load_hf_disk(folder)
    a, b = rows if rows is not None else (0, ds.num_rows)
    part = ds.select(range(a, b)) if (a, b) != (0, ds.num_rows) else ds  # contiguous: a slice, no index map
    yield from _iter_rows(part.with_format("arrow").iter(batch_size=HF_BATCH_ROWS), folder, text_field, id_field,
                          source, url_field, html, max_record_bytes, a)


# ------------------------------------------------------------------ plain text folders
def iter_text_file(path: str, root: str = "", source: str = "", html: str = "auto",
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[Record]:
    """One file is one document; its encoding is detected (UTF-8, Shift_JIS, EUC-JP ...)."""
    loc = Location(path, 1)
    try:
        with open_binary(path) as fh:
            data = fh.read(max_record_bytes + 1)
    except _TRUNCATED as exc:
        yield loc, _stream_broken(exc)
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


class _RecordBody(io.RawIOBase):
    """The next `length` bytes of a stream (one WARC record's block). A stream that ends early, or whose
    compression breaks, ends this body early too; `short`/`error` say so after the fact (warcio swallows
    EOFError, so it must not see one)."""

    def __init__(self, src: IO[bytes], length: int, head: bytes = b""):
        self._src, self._left, self._head = src, length, head
        self.short, self.error = False, None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n], self._head = self._head[:n], self._head[n:]
            return n
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        try:
            got = self._src.readinto(memoryview(buf)[:n])
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            self.error, got = exc, 0
        if not got:
            self.short, self._left = True, 0
            return 0
        self._left -= got
        return got

    def drain(self) -> None:
        while self.read(1 << 16):
            pass


def _is_cut(exc: BaseException | None) -> bool:
    """A compressed stream that ends early (truncated), not one with wrong bytes (corrupt). gzip raises EOFError
    for a cut inside a member, and BadGzipFile for a cut after the first byte of the next member's magic."""
    return isinstance(exc, EOFError) or (isinstance(exc, gzip.BadGzipFile) and str(exc).endswith("(b'\\x1f')"))


def _stream_broken(exc: BaseException) -> Rejected:
    if _is_cut(exc):
        return Rejected("truncated_file", f"compressed stream ends early ({exc})")
    return Rejected("corrupt_file", f"compressed stream is corrupt ({type(exc).__name__}: {exc})")


def _warc_errors() -> tuple:
    from warcio.exceptions import ArchiveLoadFailed
    from warcio.statusandheaders import StatusAndHeadersParserException

    return (ArchiveLoadFailed, StatusAndHeadersParserException)


def _read_warc_header(src: IO[bytes]) -> tuple[bytes, int, int | None, str | None, BaseException | None]:
    """(header block, blank bytes skipped before it, Content-Length, what is wrong, the error): b"" at a clean end."""
    skipped = 0
    lines: list[bytes] = []
    while True:
        try:
            line = src.readline(1 << 16)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            return b"".join(lines), skipped, None, "truncated" if _is_cut(exc) else "corrupt", exc
        if not line:
            if lines:
                return b"".join(lines), skipped, None, "truncated", None
            return b"", skipped, None, None, None
        if not lines and not line.strip():
            skipped += len(line)  # blank lines between records
            continue
        lines.append(line)
        if not line.strip():
            break
        if len(lines) > 1000:
            return b"".join(lines), skipped, None, "corrupt", None
    head = b"".join(lines)
    if not head.startswith(b"WARC/"):
        return head, skipped, None, "corrupt", None
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length" and value.strip().isdigit():
            return head, skipped, int(value.strip()), None, None
    return head, skipped, None, "corrupt", None


def iter_warc(path: str, source: str = "", html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
              span: tuple[int, int] | None = None, first: int = 0) -> Iterator[Record]:
    """`response` and `resource` records of a .warc or .warc.gz (or of `span`, a planned slice of a .warc that
    starts at a record; `first` documents come before it); HTML goes through charset detection and extraction.
    Request, metadata and warcinfo records are not documents and are not counted.

    Every gzip layout reads every record: a .warc.gz is decompressed as one stream (per-record members, one member
    for the whole file, or a mix), and records are framed here by their Content-Length; warcio parses each one.
    A file that ends inside a record keeps the records before it and rejects the rest as `truncated_file`, with
    the byte offset where the broken record starts; a record that is not WARC at all (or a gzip stream that is
    corrupt, not cut) rejects the rest as `corrupt_file`: the records after it cannot be found."""
    from warcio.archiveiterator import ArchiveIterator

    if path.lower().endswith((".arc", ".arc.gz")):
        yield from _iter_arc(path, source, html, max_record_bytes)
        return
    bad_warc = _warc_errors()
    where = " of the decompressed stream" if path.endswith((".gz", ".zst")) else ""
    n, offset = first, span[0] if span else 0
    with open_binary(path, span) as src:
        while True:
            head, skipped, length, wrong, error = _read_warc_header(src)
            offset += skipped
            if not head and wrong is None:
                return
            body = _RecordBody(src, length or 0, head)
            rec = result = None
            if wrong is None:
                try:
                    rec = next(iter(ArchiveIterator(body)), None)
                except bad_warc as exc:
                    error = exc
                if rec is not None:
                    result = _warc_doc(rec, path, n + 1, source, html, max_record_bytes)
                body.drain()
                error = error or body.error
                if body.short or error is not None or rec is None:
                    wrong = "truncated" if body.short and (body.error is None or _is_cut(body.error)) else "corrupt"
            if wrong is not None:
                cause = f" ({type(error).__name__}: {error})" if error is not None else ""
                what = "ends inside the WARC record" if wrong == "truncated" else "holds a broken WARC record"
                yield Location(path, n + 1), Rejected(f"{wrong}_file", f"the file {what} that starts at byte "
                                                      f"{offset:,}{where}; the rest is lost{cause}", offset)
                return
            offset += len(head) + length
            if result is not None:
                n += 1
                yield Location(path, n), result


def _warc_doc(rec, path: str, n: int, source: str, html: str, max_record_bytes: int) -> dict | Rejected | None:
    """One parsed record → a document, a Rejected, or None (not a document: request, metadata, warcinfo)."""
    if rec.rec_type not in ("response", "resource"):
        return None
    uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
    if rec.rec_type == "response" and rec.http_headers is not None:
        status = rec.http_headers.get_statuscode() or ""
        ctype = rec.http_headers.get_header("Content-Type") or ""
        if not status.startswith("2"):
            return Rejected("http_status", f"{uri}: HTTP status {status}")
    else:
        ctype = rec.rec_headers.get_header("Content-Type") or ""
    mime = ctype.split(";")[0].strip().lower()
    if mime and mime not in _TEXT_TYPES:
        return Rejected("not_text", f"{uri}: content type {mime}")
    data = rec.content_stream().read(max_record_bytes + 1)
    if len(data) > max_record_bytes:
        return Rejected("too_large", f"{uri}: body longer than {max_record_bytes:,} bytes")
    declared = ctype.split("charset=")[1].strip().strip('"') if "charset=" in ctype.lower() else None
    text, encoding = decode_bytes(data, declared)
    if text is None:
        return Rejected("invalid_encoding", f"{uri}: no text encoding fits the body")
    is_html = html == "always" or (html == "auto" and (mime in ("text/html", "application/xhtml+xml") or looks_like_html(text)))
    record = {"text": text, "id": rec.rec_headers.get_header("WARC-Record-ID") or f"{path}:{n}",
              "url": uri, "content_type": mime, "encoding": encoding}
    return make_doc(record, "text", "id", f"{path}:{n}", source, "url", "always" if is_html else "never")


def _iter_arc(path: str, source: str, html: str, max_record_bytes: int) -> Iterator[Record]:
    """Legacy ARC files: warcio frames the records itself (no Content-Length framing to check)."""
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as fh:
        try:
            for rec in ArchiveIterator(fh):
                doc = _warc_doc(rec, path, n + 1, source, html, max_record_bytes)
                if doc is not None:
                    n += 1
                    yield Location(path, n), doc
        except _warc_errors() + (EOFError, zlib.error) as exc:
            yield Location(path, n + 1), Rejected("corrupt_file", f"ARC stream breaks ({type(exc).__name__}: {exc})")


# ------------------------------------------------------------------ one entry point per source
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
        except _TRUNCATED:
            return True  # a truncated file still holds records (and its tail is reported as rejected)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows > 0
    if fmt == "hf":
        return load_hf_disk(path).num_rows > 0
    return os.path.getsize(path) > 0
