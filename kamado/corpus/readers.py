"""Streaming readers. A document is {"id", "text", "meta"}; a record that is not one is a clear error."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from typing import IO, Iterator


def open_text(path: str) -> IO[str]:
    """Open plain, .gz or .zst text for streaming reads."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="utf-8")
    return open(path, "r", encoding="utf-8")


class BadRecord(ValueError):
    """A record that cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class Location:
    path: str
    line: int


def read_jsonl(path: str, text_field: str = "text", id_field: str = "id", source: str = "") -> Iterator[tuple[Location, dict]]:
    """Yield (location, document) for every non-empty line; bad lines raise BadRecord naming file:line and field."""
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadRecord(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise BadRecord(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            text = record.get(text_field)
            if not isinstance(text, str):
                got = "missing" if text_field not in record else type(text).__name__
                raise BadRecord(f"{path}:{line_no}: field '{text_field}' must be a string ({got})")
            doc_id = record.get(id_field)
            doc_id = str(doc_id) if doc_id is not None else f"{path}:{line_no}"
            meta = {k: v for k, v in record.items() if k not in (text_field, id_field)}
            meta["source"] = source
            yield Location(path, line_no), {"id": doc_id, "text": text, "meta": meta}
