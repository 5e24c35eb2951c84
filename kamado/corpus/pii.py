"""Personal-information masking: e-mail addresses, Japanese phone numbers and postal codes."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 0X-XXXX-XXXX, 0XX-XXX-XXXX, 0X0-XXXX-XXXX (mobile), with hyphens or parentheses, after NFKC.
_PHONE = re.compile(r"(?<![0-9])0\d{1,4}[-(]\d{1,4}[-)]\d{3,4}(?![0-9])")
_POSTAL = re.compile(r"〒\s?\d{3}-\d{4}")

MASKS = (("email", _EMAIL, "<EMAIL>"), ("phone", _PHONE, "<PHONE>"), ("postal_code", _POSTAL, "<POSTAL_CODE>"))


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace each kind of personal information with a tag; return the text and how many of each were masked."""
    counts: dict[str, int] = {}
    for kind, pattern, tag in MASKS:
        text, n = pattern.subn(tag, text)
        if n:
            counts[kind] = n
    return text, counts
