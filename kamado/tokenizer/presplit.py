"""fugashi/MeCab (unidic-lite) word boundaries: marked in the training text only (llm-jp v2), and counted for the
evaluation's tokens-per-word figure. One Tagger per process: rebuilding Taggers leaks memory (shared notes)."""

from __future__ import annotations

from functools import lru_cache

# SentencePiece's `pretokenization_delimiter`: the trainer splits at it and drops it, so no piece crosses a
# word boundary; encoding never sees it. A private-use character that real text does not hold (removed if it does).
DELIMITER = "\ue000"


@lru_cache(maxsize=1)
def tagger():
    import fugashi

    return fugashi.Tagger("-Owakati")


class MecabSplitter:
    def __init__(self) -> None:
        self.tagger = tagger()

    def split(self, line: str) -> str:
        """`line` with DELIMITER between MeCab words; spaces stay (they are part of the text)."""
        out: list[str] = []
        pos = 0
        clean = line.replace(DELIMITER, "")
        for word in self.tagger(clean):
            surface = word.surface
            start = clean.find(surface, pos)
            if start < 0:  # MeCab changed the surface (should not happen); keep the text, lose the boundary
                continue
            if out:
                out.append(DELIMITER)
            out.append(clean[pos:start + len(surface)])
            pos = start + len(surface)
        out.append(clean[pos:])
        return "".join(out)


def count_words(text: str) -> int:
    """MeCab words in `text` (whitespace is not a word)."""
    return sum(1 for line in text.split("\n") if line.strip() for _ in tagger()(line))
