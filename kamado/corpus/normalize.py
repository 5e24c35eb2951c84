"""Text normalization that runs before every rule (rules and dedup see the same text).

The contract (issue 17): by default the corpus keeps Japanese text as it is written (corpus.nfkc: false, as
llm-jp does): full-width punctuation （）！？：, full-width digits and the ideographic space U+3000 stay, and the
tokenizer guarantees pieces for them (tokenizer.required_chars, kamado/tokenizer/charset.py), so text that
users, prompts and evaluation sets write reaches the model unchanged, with no normalizer to reapply at encode
time. What always runs is lossless for meaning: newlines unified, control and zero-width characters dropped,
runs of ASCII spaces/tabs collapsed, line ends stripped, at most one blank line. corpus.nfkc: true folds
full-width forms (and U+3000) to ASCII as before; a tokenizer trained on such a corpus sees no full-width
characters, so keep tokenizer.required_chars on (the default) if you choose it.
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")  # the ideographic space U+3000 is written on purpose (indents, 姓　名): kept
_BLANK_LINES = re.compile(r"\n{3,}")
# Japanese punctuation written with full-width Western marks (common in science and government text):
# ，．→ 、。 so that sentence rules and n-grams see one form. After NFKC they are ",." between Japanese
# characters, which is where we unify them.
_JA = r"[\u3041-\u30ff\u3400-\u9fff\uf900-\ufaff]"
_JA_COMMA = re.compile(rf"(?<={_JA}),\s?")
_JA_PERIOD = re.compile(rf"(?<={_JA})\.(?!\d)\s?")


def normalize(text: str, nfkc: bool = True, ja_punctuation: bool = False, neologdn: bool = False) -> str:
    """Optionally NFKC (full-width ASCII → half-width, half-width kana → full-width); drop control and zero-width
    characters, collapse runs of spaces, at most one blank line, strip line ends. Optionally unify Japanese
    punctuation (，． → 、。) and apply neologdn (long-vowel and tilde/hyphen variants, spaces between
    Japanese words), line by line so paragraphs survive."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if ja_punctuation:
        text = text.replace("，", "、").replace("．", "。")
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if _CONTROL.search(text):  # most text has none: a search is half the cost of a sub
        text = _CONTROL.sub("", text)
    if ja_punctuation:
        text = _JA_PERIOD.sub("。", _JA_COMMA.sub("、", text))
    if neologdn:
        import neologdn as _neologdn

        lines = [_neologdn.normalize(line) for line in text.split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    # on the whole text, not line by line (same result, a fifth of the filter pass's time on long documents):
    # collapse space runs, then drop the one space left at either end of each line
    if "  " in text or "\t" in text or "\u00a0" in text:  # else every run is one plain space: sub would change nothing
        text = _SPACES.sub(" ", text)
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    return (_BLANK_LINES.sub("\n\n", text) if "\n\n\n" in text else text).strip()
