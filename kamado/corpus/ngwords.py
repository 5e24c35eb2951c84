"""NG words matched on word boundaries and counted as a fraction of the text.

Substring lists drop ordinary pages (HojiChar: 「ェロ」 inside 「チェロ」, "SM" inside "SMTP"). Here a hit counts
only when it starts and ends on a MeCab word boundary of the line around it. Tokenizing every document would
cost most of the filter's time, so the work is staged: one compiled regex finds candidate substrings (most
documents have none and cost one regex scan), and only the neighbourhood of each candidate is tokenized.

One fugashi Tagger per process, built on first use and reused (rebuilding Taggers leaks memory).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources" / "ngwords"
DEFAULT_FILES = (RESOURCES / "adult_ja.txt", RESOURCES / "hate_ja.txt")
_WINDOW = 48  # characters of context on each side of a candidate given to MeCab


@functools.lru_cache(maxsize=1)
def tagger():
    """The process's one wakati Tagger (surfaces separated by spaces)."""
    import fugashi

    return fugashi.Tagger("-Owakati")


def load_words(path: str | Path) -> list[str]:
    words = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            words.append(line)
    return words


def token_boundaries(text: str) -> set[int]:
    """Character offsets in `text` where a MeCab token starts or ends."""
    bounds = {0, len(text)}
    pos = 0
    for surface in tagger().parse(text).split():
        start = text.find(surface, pos)
        if start < 0:  # MeCab changed the surface (should not happen for NFKC text): resync on the next one
            continue
        bounds.add(start)
        pos = start + len(surface)
        bounds.add(pos)
    return bounds


@dataclass
class NgMatch:
    word: str
    category: str
    start: int
    end: int


@dataclass
class NgWordMatcher:
    """Built once per process from word-list files; `category` of a word is its file's stem."""

    files: list[str] = field(default_factory=lambda: [str(p) for p in DEFAULT_FILES])

    def __post_init__(self) -> None:
        self.category: dict[str, str] = {}
        for f in self.files:
            for w in load_words(f):
                self.category.setdefault(w, Path(f).stem)
        words = sorted(self.category, key=len, reverse=True)  # longest first: エロ動画 before エロ
        self._pattern = re.compile("|".join(map(re.escape, words))) if words else None

    def matches(self, text: str) -> list[NgMatch]:
        if self._pattern is None:
            return []
        found: list[NgMatch] = []
        window_cache: dict[tuple[int, int], set[int]] = {}
        for m in self._pattern.finditer(text):
            s, e = m.span()
            # the line around the hit, at most _WINDOW characters on each side
            lo = max(text.rfind("\n", 0, s) + 1, s - _WINDOW)
            nl = text.find("\n", e)
            hi = min(len(text) if nl < 0 else nl, e + _WINDOW)
            key = (lo, hi)
            if key not in window_cache:
                window_cache[key] = {b + lo for b in token_boundaries(text[lo:hi])}
            bounds = window_cache[key]
            if s in bounds and e in bounds:
                found.append(NgMatch(m.group(), self.category[m.group()], s, e))
        return found

    def fraction(self, text: str, nonspace_chars: int | None = None) -> tuple[float, list[NgMatch]]:
        """Matched characters over non-space characters, and the matches."""
        hits = self.matches(text)
        if not hits:
            return 0.0, hits
        n = nonspace_chars if nonspace_chars is not None else len(text) - sum(c.isspace() for c in text)
        return sum(h.end - h.start for h in hits) / max(n, 1), hits


@functools.lru_cache(maxsize=8)
def matcher_for(files: tuple[str, ...]) -> NgWordMatcher:
    """One matcher per distinct list of files per process (sources may use different lists)."""
    return NgWordMatcher(list(files) if files else [str(p) for p in DEFAULT_FILES])
