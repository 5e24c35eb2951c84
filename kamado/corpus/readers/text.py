"""Plain-text files (a folder of them is a source): one file is one document."""

from __future__ import annotations

import os
from typing import Iterator

from kamado.corpus.html import decode_bytes
from kamado.corpus.readers.files import TRUNCATED, open_binary, stream_broken
from kamado.corpus.readers.records import DEFAULT_MAX_RECORD_BYTES, Location, Record, Rejected, make_doc


def iter_text_file(path: str, root: str = "", source: str = "", html: str = "auto",
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[Record]:
    """One file is one document; its encoding is detected (UTF-8, Shift_JIS, EUC-JP ...)."""
    loc = Location(path, 1)
    try:
        with open_binary(path) as fh:
            data = fh.read(max_record_bytes + 1)
    except TRUNCATED as exc:
        yield loc, stream_broken(exc)
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
