"""Text normalization that runs before every rule (rules and dedup see the same text)."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# Japanese punctuation written with full-width Western marks (common in science and government text):
# ，．→ 、。 so that sentence rules and n-grams see one form. After NFKC they are ",." between Japanese
# characters, which is where we unify them.
_JA = r"[\u3041-\u30ff\u3400-\u9fff\uf900-\ufaff]"
_JA_COMMA = re.compile(rf"(?<={_JA}),\s?")
_JA_PERIOD = re.compile(rf"(?<={_JA})\.(?!\d)\s?")


def normalize(text: str, nfkc: bool = True, ja_punctuation: bool = False, neologdn: bool = False) -> str:
    """NFKC (full-width ASCII → half-width, half-width kana → full-width), drop control and zero-width
    characters, collapse runs of spaces, at most one blank line, strip line ends. Optionally unify Japanese
    punctuation (，． → 、。) and apply neologdn (long-vowel and tilde/hyphen variants, spaces between
    Japanese words), line by line so paragraphs survive."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if ja_punctuation:
        text = text.replace("，", "、").replace("．", "。")
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    if ja_punctuation:
        text = _JA_PERIOD.sub("。", _JA_COMMA.sub("、", text))
    if neologdn:
        import neologdn as _neologdn

        lines = [_neologdn.normalize(line) for line in text.split("\n")]
    else:
        lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
