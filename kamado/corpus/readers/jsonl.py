"""JSONL (plain, .gz, .zst), whole or one planned byte range that starts at a line start; a line is never read past
the size limit."""

from __future__ import annotations

import json
from typing import IO, Iterator

from kamado.corpus.readers.files import TRUNCATED, open_binary, stream_broken
from kamado.corpus.readers.records import (DEFAULT_MAX_RECORD_BYTES, BadRecord, Location, Record, Rejected,
                                           make_doc)


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
            except TRUNCATED as exc:  # a cut or corrupt .gz/.zst: count the lost tail once, keep what came before
                yield Location(path, line_no + 1), stream_broken(exc)
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
