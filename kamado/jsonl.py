"""One reader for the small JSON Lines files that users hand in (fine-tuning records, evaluation items): every
error names the file, the line and the field.

Corpus shards are not read here: kamado/corpus/readers/ streams those and turns bad lines into counted
rejections instead of errors (one bad web page must not stop a crawl; one bad SFT record is a bug to fix).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from kamado.corpus.readers import open_text


class RecordError(ValueError):
    """A record that cannot be used; the message starts with `file:line`."""


def iter_jsonl(path: str, error: type[RecordError] = RecordError) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a plain, .gz or .zst JSONL file. A line that is not a
    JSON object raises `error` (a RecordError subclass, so each caller keeps its own exception type)."""
    with open_text(str(path)) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise error(f"{path}:{line_no}: expected a JSON object, got {type(rec).__name__}")
            yield line_no, rec


def need(rec: dict, key: str, kind: type | tuple[type, ...], where: str, error: type[RecordError] = RecordError) -> Any:
    """rec[key], checked to be of `kind` (bool is never taken for int); `where` is the record's `file:line`."""
    if key not in rec:
        raise error(f"{where}: field '{key}' missing")
    value = rec[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise error(f"{where}: field '{key}' must be {names}, not {type(value).__name__}")
    return value
