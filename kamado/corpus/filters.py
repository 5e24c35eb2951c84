"""Japanese quality rules (Swallow corpus v1 thresholds, Gopher repetition measures on characters).

A rule has a `name` and `check(ctx) -> reason | None`; `keep(doc)` gives the design's `True | (False, reason)`.
The shard runner stops a document at its first failing rule and counts the reason, so every drop is explained
in the report. Rules are ordered cheapest first; what several rules need (character counts, lines,
sentences, code points) is computed once per document in `DocContext` and only when a rule asks for it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Protocol, Union
from urllib.parse import urlsplit

import numpy as np

from kamado.corpus.config import QualityRules

Verdict = Union[bool, tuple[bool, str]]

_HIRAGANA = re.compile(r"[\u3041-\u309f]")
_KATAKANA = re.compile(r"[\u30a0-\u30ff\u31f0-\u31ff]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s")
# Swallow's sentence: a run ending in 。．！？!? (or at the end of a line)
_SENTENCE = re.compile(r"[^。．！？!?\n]+[。．！？!?]*")
_NOT_PUNCT_OR_SPACE = re.compile(r"[^\s。．！？!?]")  # one such character: _SENTENCE finds a non-blank sentence
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_BULLETS = ("・", "•", "●", "○", "◆", "◇", "■", "□", "▶", "►", "★", "☆", "- ", "* ", "+ ", "→", "※")
_ELLIPSES = ("…", "...", "・・・", "‥", "・")


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


class Filter(Protocol):
    name: str

    def keep(self, doc: dict) -> Verdict: ...


class Rule:
    """Base of kamado's rules: `check(ctx)` returns the drop reason or None."""

    name = "rule"

    def check(self, ctx: DocContext) -> Optional[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def keep(self, doc: dict) -> Verdict:
        reason = self.check(DocContext(doc))
        return True if reason is None else (False, reason)


@dataclass
class LengthFilter(Rule):
    min_chars: int
    max_chars: int
    name: str = "length"

    def check(self, ctx):
        n = len(ctx.text)
        if n < self.min_chars:
            return "too_short"
        if n > self.max_chars:
            return "too_long"
        return None


@dataclass
class CharacterClassFilter(Rule):
    """Japanese, hiragana and katakana fractions (Swallow): one vectorised pass over the code points."""

    min_japanese: float
    min_hiragana: float
    max_katakana: float
    name: str = "character_classes"

    def check(self, ctx):
        other, hira, kata, kanji, punct, space = (int(x) for x in ctx.counts)
        nonspace = max(other + hira + kata + kanji + punct, 1)
        ja = hira + kata + kanji + punct
        if ja / nonspace < self.min_japanese:
            return "low_japanese_fraction"
        if hira / max(ja, 1) < self.min_hiragana:
            return "low_hiragana_fraction"
        if kata / max(ja, 1) > self.max_katakana:
            return "high_katakana_fraction"
        return None


@dataclass
class DomainBlockFilter(Rule):
    """Drop a document whose URL host, or any parent domain of it, is on the block list."""

    domains: frozenset
    name: str = "blocked_domain"

    def check(self, ctx):
        url = ctx.doc.get("meta", {}).get("url")
        if not url or not self.domains:
            return None
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        parts = host.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in self.domains:
                return "blocked_domain"
        return None


@dataclass
class NgWordFilter(Rule):
    """NG-word characters on MeCab word boundaries over non-space characters (see ngwords.py)."""

    max_fraction: float
    files: tuple = ()
    name: str = "ng_words"

    def __post_init__(self):
        from kamado.corpus.ngwords import matcher_for

        self.matcher = matcher_for(tuple(self.files))

    def check(self, ctx):
        frac, hits = self.matcher.fraction(ctx.text, len(ctx.nonspace))
        if hits:
            ctx.doc.setdefault("meta", {})["ng_words"] = sorted({h.word for h in hits})[:10]
        return "ng_words" if frac > self.max_fraction else None


@dataclass
class SentenceLengthFilter(Rule):
    min_avg: float
    max_avg: float
    max_len: int
    name: str = "sentence_length"

    def check(self, ctx):
        n = len(ctx.text)
        if self.min_avg <= 0 and self.max_avg >= n and self.max_len >= n and _NOT_PUNCT_OR_SPACE.search(ctx.text):
            return None  # no threshold can fire and a sentence exists: skip splitting (same verdict, cheaper)
        sents = ctx.sentences
        if not sents:
            return "short_sentences"
        lengths = [len(s) for s in sents]
        avg = sum(lengths) / len(lengths)
        if avg < self.min_avg:
            return "short_sentences"
        if avg > self.max_avg:
            return "long_sentences"
        if max(lengths) > self.max_len:
            return "sentence_too_long"
        return None


@dataclass
class LineShapeFilter(Rule):
    """Swallow's ellipsis fraction (sentences ending in … or ・) and Gopher's bullet-line fraction."""

    max_ellipsis: float
    max_bullet: float
    name: str = "line_shape"

    def check(self, ctx):
        sents = ctx.sentences
        if sents and self.max_ellipsis < 1.0:
            if sum(s.endswith(_ELLIPSES) for s in sents) / len(sents) > self.max_ellipsis:
                return "ellipsis_lines"
        lines = ctx.lines
        if lines and self.max_bullet < 1.0:
            if sum(line.startswith(_BULLETS) for line in lines) / len(lines) > self.max_bullet:
                return "bullet_lines"
        return None


def _duplicates(items: list[str]) -> tuple[float, float]:
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


@dataclass
class RepetitionFilter(Rule):
    """Gopher's duplicate line / paragraph fractions (by count and by characters)."""

    max_line: float
    max_paragraph: float
    max_line_chars: float
    max_paragraph_chars: float
    name: str = "repetition"

    def check(self, ctx):
        frac, chars = _duplicates(ctx.lines)
        if frac > self.max_line:
            return "duplicate_lines"
        if chars > self.max_line_chars:
            return "duplicate_line_chars"
        frac, chars = _duplicates(ctx.paragraphs)
        if frac > self.max_paragraph:
            return "duplicate_paragraphs"
        if chars > self.max_paragraph_chars:
            return "duplicate_paragraph_chars"
        return None


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


@dataclass
class NgramRepetitionFilter(Rule):
    top: dict
    dup: dict
    name: str = "ngram_repetition"

    def check(self, ctx):
        return ngram_fractions(ctx.nonspace, self.top, self.dup)


@dataclass
class CompressionRatioFilter(Rule):
    """zlib size over UTF-8 size: boilerplate and spam repeat themselves and compress far better than prose."""

    min_ratio: float
    name: str = "compression_ratio"

    def check(self, ctx):
        raw = ctx.text.encode("utf-8")
        return "low_compression_ratio" if len(zlib.compress(raw, 6)) / max(len(raw), 1) < self.min_ratio else None


@dataclass
class QualityModelFilter(Rule):
    """The learned filter: a hashed character n-gram linear classifier (quality_model.py)."""

    path: str
    min_score: float
    name: str = "quality_model"

    def __post_init__(self):
        from kamado.corpus.quality_model import load_model

        self.model = load_model(self.path)

    def check(self, ctx):
        score = self.model.score(ctx.text)
        ctx.doc.setdefault("meta", {})["quality_score"] = round(score, 4)
        return "low_quality_score" if score < self.min_score else None


def _domains(rules: QualityRules) -> frozenset:
    domains = {d.strip().lower().lstrip(".") for d in rules.blocked_domains if d.strip()}
    if rules.blocked_domains_file:
        with open(rules.blocked_domains_file, encoding="utf-8") as fh:
            domains |= {line.strip().lower().lstrip(".") for line in fh if line.strip() and not line.startswith("#")}
    return frozenset(domains)


def build_filters(rules: QualityRules) -> list[Rule]:
    """The rule chain, cheapest first; rules switched off by their thresholds are left out."""
    r = rules
    chain: list[Rule] = []
    domains = _domains(r)
    if domains:
        chain.append(DomainBlockFilter(domains))
    chain.append(LengthFilter(r.min_chars, r.max_chars))
    # fractions lie in [0, 1] (katakana ≤ Japanese characters): min ≤ 0 and max ≥ 1 never drop, so skip the pass
    if r.min_japanese_fraction > 0 or r.min_hiragana_fraction > 0 or r.max_katakana_fraction < 1.0:
        chain.append(CharacterClassFilter(r.min_japanese_fraction, r.min_hiragana_fraction, r.max_katakana_fraction))
    if r.max_ng_word_fraction < 1.0:
        chain.append(NgWordFilter(r.max_ng_word_fraction, tuple(r.ng_word_files)))
    if r.min_avg_sentence_length > 0 or r.max_avg_sentence_length < float("inf") or r.max_sentence_length > 0:
        chain.append(SentenceLengthFilter(r.min_avg_sentence_length, r.max_avg_sentence_length, r.max_sentence_length))
    if r.max_ellipsis_line_fraction < 1.0 or r.max_bullet_line_fraction < 1.0:
        chain.append(LineShapeFilter(r.max_ellipsis_line_fraction, r.max_bullet_line_fraction))
    repetition = (r.max_duplicate_line_fraction, r.max_duplicate_paragraph_fraction,
                  r.max_duplicate_line_char_fraction, r.max_duplicate_paragraph_char_fraction)
    if min(repetition) < 1.0:  # fractions of items / characters: a threshold ≥ 1 never drops
        chain.append(RepetitionFilter(*repetition))
    top = {2: r.max_top_2gram_char_fraction, 3: r.max_top_3gram_char_fraction, 4: r.max_top_4gram_char_fraction}
    dup = {n: getattr(r, f"max_duplicate_{n}gram_char_fraction") for n in range(5, 11)}
    top = {n: v for n, v in top.items() if v < 1.0}
    dup = {n: v for n, v in dup.items() if v < 1.0}
    if top or dup:
        chain.append(NgramRepetitionFilter(top, dup))
    if r.min_compression_ratio > 0:
        chain.append(CompressionRatioFilter(r.min_compression_ratio))
    if r.quality_model:
        chain.append(QualityModelFilter(r.quality_model, r.min_quality_score))
    return chain


def apply_filters(filters: list, doc: dict) -> str | None:
    """Return the reason of the first filter that drops the document, or None when all keep it."""
    ctx = DocContext(doc)
    for f in filters:
        if isinstance(f, Rule):
            reason = f.check(ctx)
            if reason:
                return reason
            continue
        verdict = f.keep(doc)  # any object with the design's keep(doc) protocol
        if verdict is True:
            continue
        if verdict is False:
            return f.name
        ok, reason = verdict
        if not ok:
            return reason
    return None
