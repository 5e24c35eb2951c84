"""What the quality rules measure on a document's text: character-class fractions and counts, lines, paragraphs and
sentences (Swallow's split), duplicate items and character n-gram repetition (Gopher's measures on characters).

`DocContext` computes each measure at most once per document, and only when a rule asks for it (filters.py)."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Optional

import numpy as np

_HIRAGANA = re.compile(r"[\u3041-\u309f]")
_KATAKANA = re.compile(r"[\u30a0-\u30ff\u31f0-\u31ff]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s")
# Swallow's sentence: a run ending in 。．！？!? (or at the end of a line)
_SENTENCE = re.compile(r"[^。．！？!?\n]+[。．！？!?]*")
NOT_PUNCT_OR_SPACE = re.compile(r"[^\s。．！？!?]")  # one such character: _SENTENCE finds a non-blank sentence
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def char_fractions(text: str) -> dict[str, float]:
    """Fractions over non-space characters (and hiragana/katakana over Japanese characters, as Swallow)."""
    body = _SPACE.sub("", text)
    n = max(len(body), 1)
    hira = len(_HIRAGANA.findall(body))
    kata = len(_KATAKANA.findall(body))
    kanji = len(_KANJI.findall(body))
    punct = sum(body.count(c) for c in "、。，．！？")
    ja = max(hira + kata + kanji + punct, 1)
    return {"hiragana": hira / n, "katakana": kata / n, "kanji": kanji / n, "japanese": (hira + kata + kanji) / n,
            "japanese_with_punctuation": (hira + kata + kanji + punct) / n,
            "hiragana_of_japanese": hira / ja, "katakana_of_japanese": kata / ja}


# Code-point classes for the vectorised counts (NFKC has already folded full-width and half-width forms).
def _class_table() -> np.ndarray:
    t = np.zeros(0x10000, dtype=np.uint8)  # 0 other, 1 hiragana, 2 katakana, 3 kanji, 4 Japanese punctuation, 5 space
    t[0x3041:0x30A0] = 1
    t[0x30A0:0x3100] = 2
    t[0x31F0:0x3200] = 2
    t[0x3400:0x4DC0] = 3
    t[0x4E00:0xA000] = 3
    t[0xF900:0xFB00] = 3
    t[0x3005] = 3  # 々
    for c in "、。，．！？":
        t[ord(c)] = 4
    for c in " \t\n\r\f\v\u3000\u00a0":
        t[ord(c)] = 5
    return t


_CLASS = _class_table()


class DocContext:
    """One document's text and what rules derive from it, each computed at most once."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.text: str = doc["text"]

    @cached_property
    def codepoints(self) -> np.ndarray:
        return np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)

    @cached_property
    def nonspace(self) -> np.ndarray:
        cp = self.codepoints
        return cp[_CLASS[np.minimum(cp, 0xFFFF)] != 5]  # astral characters map to 0xFFFF: "other"

    @cached_property
    def counts(self) -> np.ndarray:
        cp = self.codepoints
        cls = _CLASS[np.minimum(cp, 0xFFFF)]
        cls = np.where(cp > 0xFFFF, 0, cls)
        return np.bincount(cls, minlength=6)

    @cached_property
    def lines(self) -> list[str]:
        return [line for line in (s.strip() for s in self.text.split("\n")) if line]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in _PARAGRAPH_BREAK.split(self.text) if p.strip()]

    @cached_property
    def sentences(self) -> list[str]:
        return [s.strip() for s in _SENTENCE.findall(self.text) if s.strip()]



def duplicates(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of characters in those repeats)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_items = dup_chars = total = 0
    for it in items:
        total += len(it)
        if it in seen:
            dup_items += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup_items / len(items), dup_chars / max(total, 1)


_P = np.uint64(0x100000001B3)


def ngram_fractions(cp: np.ndarray, top: dict[int, float], dup: dict[int, float]) -> Optional[str]:
    """Character n-gram repetition as the Swallow corpus measures it (Gopher's measures with characters for
    words, which is what its thresholds were calibrated on): top_n = count of the most frequent n-gram over all
    n-grams; duplicate_n = distinct n-grams seen more than once over distinct n-grams. (Gopher's "characters
    covered by repeated n-grams" flags a third of ordinary Japanese prose at these thresholds: ということ, ました。)
    Vectorised on code points (spaces removed): each n-gram is a 64-bit polynomial hash built from the
    (n-1)-gram's, np.unique counts them. Returns the first failing reason or None."""
    if len(cp) == 0:
        return None
    h = cp.astype(np.uint64)
    with np.errstate(over="ignore"):
        for n in range(2, max(list(top) + list(dup) + [1]) + 1):
            if len(cp) < n:
                break
            h = h[:-1] * _P + cp[n - 1:].astype(np.uint64)
            if n not in top and n not in dup:
                continue
            _, counts = np.unique(h, return_counts=True)
            if n in top and counts.max() / len(h) > top[n]:
                return f"top_{n}gram"
            if n in dup and np.count_nonzero(counts > 1) / len(counts) > dup[n]:
                return f"duplicate_{n}gram"
    return None
