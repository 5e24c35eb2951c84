"""What every evaluation reader shares (kamado/eval/data.py for JGLUE, formats.py for the other sets): the item
an evaluation scores and the error that names the file, the line (or JSON path) and the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kamado.jsonl import RecordError, iter_jsonl, need


class EvalDataError(RecordError):
    """An evaluation file that cannot be used: the message names the file, the line and the field."""


@dataclass
class Item:
    id: str
    fields: dict[str, Any]  # what a prompt template may use, e.g. {question}
    choices: list[str] = field(default_factory=list)  # multiple choice: the continuations scored
    label: int | None = None  # index into choices
    answers: list[str] = field(default_factory=list)  # generation: every accepted answer
    target: float | None = None  # regression (JSTS): the gold score


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    return iter_jsonl(str(path), EvalDataError)


def _need(rec: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    return need(rec, key, kind, where, EvalDataError)
