"""WARC (.warc, .warc.gz in any gzip layout) and legacy ARC: `response` and `resource` records as documents, HTML
through charset detection and extraction; a file that breaks keeps the records before the break."""

from __future__ import annotations

import gzip
import io
import zlib
from typing import IO, Iterator

from kamado.corpus.html import decode_bytes, looks_like_html
from kamado.corpus.readers.files import is_cut, open_binary
from kamado.corpus.readers.records import DEFAULT_MAX_RECORD_BYTES, Location, Record, Rejected, make_doc

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
            return b"".join(lines), skipped, None, "truncated" if is_cut(exc) else "corrupt", exc
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
                    wrong = "truncated" if body.short and (body.error is None or is_cut(body.error)) else "corrupt"
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
