"""What every reader yields: `(Location, doc)` or `(Location, Rejected)`, and the document check they share.

A document is {"id", "text", "meta"}; `make_doc` turns one parsed record into one, or into a `Rejected` that
names the field (HTML is extracted here, so every format treats it alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from kamado.corpus.html import HtmlParseError, html_to_text, looks_like_html

DEFAULT_MAX_RECORD_BYTES = 10_000_000


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
