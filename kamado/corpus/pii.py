"""Personal-information masking with typed placeholders.

E-mail, Japanese and international phone numbers, My Number (個人番号: 12 digits with a valid check digit),
credit-card numbers (13–19 digits passing Luhn), IPv4 and IPv6 addresses, Japanese postal codes. Number-like
candidates are validated (check digit, Luhn, octet range, `ipaddress`) so dates, prices, version strings and
ISBNs stay. Runs after NFKC, so full-width digits are already ASCII.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Optional

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# Japanese: 0X-XXXX-XXXX, 0XX-XXX-XXXX, 0X0-XXXX-XXXX (mobile), 0120-XXX-XXX, with hyphens or parentheses.
_PHONE_JA = re.compile(r"(?<![\d\-])0\d{1,4}[-(]\d{1,4}[-)]\d{3,4}(?![\d\-])")
# International: +CC then 6–14 more digits in groups separated by spaces, hyphens, dots or a (0) trunk prefix.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ \-.]?\(0\))?(?:[ \-.]?\d{1,4}){2,5}(?![\d\-])")
_MY_NUMBER = re.compile(r"(?<![\d\-])\d{4}[ \-]?\d{4}[ \-]?\d{4}(?![\d\-])")
_CARD = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d\-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_POSTAL = re.compile(r"〒\s?\d{3}-\d{4}")


def my_number_valid(digits: str) -> bool:
    """個人番号 check digit (総務省令第85号): with P_n the n-th digit counted leftwards from the one before the
    check digit, Q_n = n+1 (n ≤ 6) or n−5 (n ≥ 7), r = Σ P_n Q_n mod 11; the check digit is 0 if r ≤ 1 else 11 − r."""
    if len(digits) != 12 or not digits.isdigit():
        return False
    body = digits[:11][::-1]
    r = sum(int(p) * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(body, start=1)) % 11
    return int(digits[11]) == (0 if r <= 1 else 11 - r)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _card(m: str) -> bool:
    d = _digits(m)
    return 13 <= len(d) <= 19 and len(set(d)) > 1 and luhn_valid(d)


def _ipv4(m: str) -> bool:
    parts = m.split(".")
    return all(p == "0" or (not p.startswith("0") and int(p) <= 255) for p in parts)


def _ipv6(m: str) -> bool:
    if m.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", m):
        return False
    if re.fullmatch(r"\d{1,2}:\d{2}:\d{2}", m):  # a time of day, not an address
        return False
    try:
        ipaddress.IPv6Address(m)
        return True
    except ValueError:
        return False


# (kind, pattern, placeholder, validator); order matters: specific numbers before generic ones, so a card
# number is not taken for a phone number and an IPv4 inside text is not taken for anything else.
MASKS: tuple[tuple[str, re.Pattern, str, Optional[Callable[[str], bool]]], ...] = (
    ("email", _EMAIL, "<EMAIL>", None),
    ("ipv6", _IPV6, "<IPV6>", _ipv6),
    ("credit_card", _CARD, "<CREDIT_CARD>", _card),
    ("my_number", _MY_NUMBER, "<MY_NUMBER>", lambda m: my_number_valid(_digits(m))),
    ("ipv4", _IPV4, "<IPV4>", _ipv4),
    ("phone", _PHONE_INTL, "<PHONE>", lambda m: 8 <= len(_digits(m)) <= 15),
    ("phone", _PHONE_JA, "<PHONE>", None),
    ("postal_code", _POSTAL, "<POSTAL_CODE>", None),
)


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace each kind of personal information with a typed placeholder; return the text and counts per kind."""
    counts: dict[str, int] = {}
    for kind, pattern, tag, valid in MASKS:
        n = 0

        def repl(m: re.Match) -> str:
            nonlocal n
            if valid is None or valid(m.group()):
                n += 1
                return tag
            return m.group()

        if pattern.search(text):
            text = pattern.sub(repl, text)
        if n:
            counts[kind] = counts.get(kind, 0) + n
    return text, counts
