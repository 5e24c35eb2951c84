"""Japanese quality rules (Swallow corpus v1 thresholds, Gopher repetition measures on characters).

A rule has a `name` and `check(ctx) -> reason | None`; `keep(doc)` gives the design's `True | (False, reason)`.
The shard runner stops a document at its first failing rule and counts the reason, so every drop is explained
in the report. Rules are ordered cheapest first; what several rules need (character counts, lines,
sentences, code points) is computed once per document in `DocContext` (kamado/corpus/text_stats.py, with the
n-gram and duplicate measures) and only when a rule asks for it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional, Protocol, Union
from urllib.parse import urlsplit

from kamado.corpus.config import QualityRules
from kamado.corpus.text_stats import NOT_PUNCT_OR_SPACE, DocContext, char_fractions, duplicates, ngram_fractions

__all__ = ["DocContext", "Filter", "Rule", "Verdict", "apply_filters", "build_filters", "char_fractions",
           "ngram_fractions", "CharacterClassFilter", "CompressionRatioFilter", "DomainBlockFilter", "LengthFilter",
           "LineShapeFilter", "NgWordFilter", "NgramRepetitionFilter", "QualityModelFilter", "RepetitionFilter",
           "SentenceLengthFilter"]

Verdict = Union[bool, tuple[bool, str]]

_BULLETS = ("・", "•", "●", "○", "◆", "◇", "■", "□", "▶", "►", "★", "☆", "- ", "* ", "+ ", "→", "※")
_ELLIPSES = ("…", "...", "・・・", "‥", "・")


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
        if self.min_avg <= 0 and self.max_avg >= n and self.max_len >= n and NOT_PUNCT_OR_SPACE.search(ctx.text):
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



@dataclass
class RepetitionFilter(Rule):
    """Gopher's duplicate line / paragraph fractions (by count and by characters)."""

    max_line: float
    max_paragraph: float
    max_line_chars: float
    max_paragraph_chars: float
    name: str = "repetition"

    def check(self, ctx):
        frac, chars = duplicates(ctx.lines)
        if frac > self.max_line:
            return "duplicate_lines"
        if chars > self.max_line_chars:
            return "duplicate_line_chars"
        frac, chars = duplicates(ctx.paragraphs)
        if frac > self.max_paragraph:
            return "duplicate_paragraphs"
        if chars > self.max_paragraph_chars:
            return "duplicate_paragraph_chars"
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
