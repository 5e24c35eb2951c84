"""Japanese quality rules. A filter has a `name` and `keep(doc) -> True | (False, reason)`;
the shard runner counts every reason, so a drop is always explained in the report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Union

from kamado.recipe import QualityRules

Verdict = Union[bool, tuple[bool, str]]

_HIRAGANA = re.compile(r"[\u3041-\u309f]")
_KATAKANA = re.compile(r"[\u30a0-\u30ff\u31f0-\u31ff]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s")


class Filter(Protocol):
    name: str

    def keep(self, doc: dict) -> Verdict: ...


def char_fractions(text: str) -> dict[str, float]:
    body = _SPACE.sub("", text)
    n = max(len(body), 1)
    hira = len(_HIRAGANA.findall(body))
    kata = len(_KATAKANA.findall(body))
    kanji = len(_KANJI.findall(body))
    return {"hiragana": hira / n, "katakana": kata / n, "kanji": kanji / n, "japanese": (hira + kata + kanji) / n}


@dataclass
class LengthFilter:
    min_chars: int
    max_chars: int
    name: str = "length"

    def keep(self, doc: dict) -> Verdict:
        n = len(doc["text"])
        if n < self.min_chars:
            return False, "too_short"
        if n > self.max_chars:
            return False, "too_long"
        return True


@dataclass
class JapaneseFractionFilter:
    min_fraction: float
    name: str = "japanese_fraction"

    def keep(self, doc: dict) -> Verdict:
        return True if char_fractions(doc["text"])["japanese"] >= self.min_fraction else (False, "low_japanese_fraction")


@dataclass
class HiraganaFractionFilter:
    min_fraction: float
    name: str = "hiragana_fraction"

    def keep(self, doc: dict) -> Verdict:
        return True if char_fractions(doc["text"])["hiragana"] >= self.min_fraction else (False, "low_hiragana_fraction")


def build_filters(rules: QualityRules) -> list[Filter]:
    return [
        LengthFilter(rules.min_chars, rules.max_chars),
        JapaneseFractionFilter(rules.min_japanese_fraction),
        HiraganaFractionFilter(rules.min_hiragana_fraction),
    ]


def apply_filters(filters: list[Filter], doc: dict) -> str | None:
    """Return the reason of the first filter that drops the document, or None when all keep it."""
    for f in filters:
        verdict = f.keep(doc)
        if verdict is True:
            continue
        if verdict is False:
            return f.name
        ok, reason = verdict
        if not ok:
            return reason
    return None
