"""Text normalization that runs before every rule (rules and dedup see the same text)."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str, nfkc: bool = True) -> str:
    """NFKC (full-width ASCII → half-width, half-width kana → full-width), drop control characters,
    collapse runs of spaces, at most one blank line, strip line ends."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
