"""The characters a Japanese tokenizer must hold as pieces of their own (SentencePiece `required_chars`).

Text is kept as written (corpus.nfkc: false), so full-width punctuation （）！？：, full-width digits ０-９ and
the ideographic space U+3000 reach the tokenizer; a character that is not a piece costs 3 byte-fallback tokens.
SentencePiece's `character_coverage` keeps only the characters the sampled training text happens to use, so
the sets below are added whatever the corpus holds:

- `kana`: JIS X 0208 rows 1–8 (ideographic space, Japanese and full-width punctuation and symbols, full-width
  digits and Latin letters, hiragana, katakana, Greek, Cyrillic, box drawing), all of U+FF01–U+FF5E, ゔ, ー.
  About 700 characters.
- `jis_x_0208`: `kana` plus the 6,355 kanji of JIS X 0208 levels 1 and 2 (rows 16–84): every kanji a
  Shift_JIS/EUC-JP text can hold. About 7,000 characters.

Both are derived from Python's `euc_jp` codec (JIS row r, cell c is the EUC-JP byte pair 0xA0+r, 0xA0+c), so
the list is not typed in by hand. Digits 0-9 are always required (split_digits makes every digit a piece).
"""

from __future__ import annotations

import functools

DIGITS = "0123456789"
CHARSETS = ("none", "kana", "jis_x_0208")
# "auto" picks by vocabulary size: the full set needs ~7,000 pieces, the kana/symbol set ~700.
AUTO_JIS_MIN_VOCAB = 16_000
AUTO_KANA_MIN_VOCAB = 8_000


def jis_row(row: int) -> str:
    """The characters of one JIS X 0208 row (1–94), in cell order, decoded through EUC-JP."""
    out = []
    for cell in range(1, 95):
        try:
            out.append(bytes([0xA0 + row, 0xA0 + cell]).decode("euc_jp"))
        except UnicodeDecodeError:
            continue  # an unassigned cell
    return "".join(out)


@functools.lru_cache(maxsize=None)
def required_set(name: str) -> str:
    """The named set (see the module docstring) plus the ASCII digits, without duplicates, in a fixed order."""
    if name not in CHARSETS:
        raise ValueError(f"tokenizer.required_chars must be auto or one of {', '.join(CHARSETS)}, not {name!r}")
    chars = list(DIGITS)
    if name != "none":
        chars += "".join(jis_row(r) for r in range(1, 9))
        chars += [chr(c) for c in range(0xFF01, 0xFF5F)] + ["ゔ", "ー"]
    if name == "jis_x_0208":
        chars += "".join(jis_row(r) for r in range(16, 85))
    return "".join(dict.fromkeys(c for c in chars if len(c) == 1 and not c.isspace() or c == "\u3000"))


def resolve(name: str, vocab_size: int) -> str:
    """`auto` → the largest set the vocabulary affords comfortably; other names pass through."""
    if name != "auto":
        return name
    if vocab_size >= AUTO_JIS_MIN_VOCAB:
        return "jis_x_0208"
    return "kana" if vocab_size >= AUTO_KANA_MIN_VOCAB else "none"


# ------------------------------------------------------------------ character classes (for evaluation)
CLASSES = ("hiragana", "katakana", "kanji", "fullwidth_symbol", "ascii", "other")


def char_class(ch: str) -> str:
    """Which class a character counts under in the byte-fallback report."""
    c = ord(ch)
    if 0x3041 <= c <= 0x309F:
        return "hiragana"
    if 0x30A0 <= c <= 0x30FF or 0x31F0 <= c <= 0x31FF or 0xFF66 <= c <= 0xFF9F:
        return "katakana"
    if 0x3400 <= c <= 0x4DBF or 0x4E00 <= c <= 0x9FFF or 0xF900 <= c <= 0xFAFF or 0x20000 <= c <= 0x3FFFF \
            or ch in "々〆〇":
        return "kanji"
    if c < 0x80:
        return "ascii"
    if 0x3000 <= c <= 0x303F or 0xFF00 <= c <= 0xFFEF or 0x2000 <= c <= 0x2BFF:
        return "fullwidth_symbol"  # CJK punctuation, full-width forms, general punctuation, arrows, shapes
    return "other"
