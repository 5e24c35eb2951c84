"""Personal-information masking with typed placeholders.

Masked: e-mail addresses; Japanese phone numbers (landlines with the area code in parentheses `(03)1234-5678`,
`03(1234)5678` or hyphens/spaces `03-1234-5678`, mobiles and IP phones 020/050/060/070/080/090 with or without
separators, toll-free 0120/0800 and 0570); international numbers (+81 with or without separators, with or
without the trunk `(0)`, and other +CC numbers); My Number (個人番号: 12 digits whose check digit is valid);
credit-card numbers (an issuer prefix and length of Visa, Mastercard, Amex, JCB, Diners, Discover/UnionPay,
passing Luhn, written whole or in groups of four or more separated by spaces/hyphens); IPv4 and IPv6 addresses;
postal codes written with 〒.

Normalization-invariant: every pattern takes both ASCII and full-width digits, letters, hyphens (－ ‐ − ー),
parentheses, colons, plus and at signs, and validators read the NFKC form, so masking before or after the
corpus's normalization gives the same text (`normalize(mask(t)) == mask(normalize(t))`); the stage masks the
normalized text. No pattern relies on `\\b` (a number written right after kana or kanji is matched): numbers are
delimited by "no digit (or digit + separator) on either side".

Out of scope (left as written): domestic landline numbers written with no separator at all (`0312345678`: as
likely an order or product number), numbers spelled in kanji (〇三‐…), phone extensions (内線), street
addresses and personal names (need NER), card numbers with a wrong check digit or an unknown issuer prefix
(a wrong check digit makes them a decoy, not a card), a 12-digit number that is not My Number but whose last
digit happens to satisfy the check (1 in 11 of random 12-digit numbers; masked), postal codes without 〒
(`123-4567` is as often a part or order number), an address written with full-width ．when
corpus.ja_punctuation is on (it turns ．into 。 before masking), IPv4 addresses inside longer dotted strings (version numbers).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Callable, Optional

_D = "[0-9０-９]"  # a digit, ASCII or full-width
_HYPHEN = "[-‐‑‒–—―−－ー]"  # hyphen-like marks people put between digit groups (ー: the long-vowel mark, often)
_SEP = rf"(?:[ \u3000]?{_HYPHEN}[ \u3000]?|[ \u3000])"  # between digit groups: a hyphen (spaces around) or a space
_OPEN, _CLOSE = "[(（]", "[)）]"
_NO_DIGIT_BEFORE = rf"(?<![0-9０-９])(?<![0-9０-９]{_HYPHEN})(?<![0-9０-９][.．,，])"
_NO_DIGIT_AFTER = rf"(?!{_HYPHEN}?{_D})(?![.．,，]{_D})"
# digit groups (cards, My Number) also continue across a space: "4111 1111 1111 1112" is one number, so its
# first 12 digits must not be taken for a My Number
_NO_GROUP_BEFORE = rf"{_NO_DIGIT_BEFORE}(?<![0-9０-９][ \u3000])(?<![+＋])"  # after "+": a phone number
_NO_GROUP_AFTER = rf"{_NO_DIGIT_AFTER}(?![ \u3000]{_D})"

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-Ａ-Ｚａ-ｚ０-９＿．％＋－]+[@＠][A-Za-z0-9\-Ａ-Ｚａ-ｚ０-９－]+"
                    r"(?:[.．][A-Za-z0-9\-Ａ-Ｚａ-ｚ０-９－]+)*[.．][A-Za-zＡ-Ｚａ-ｚ]{2,}")
_PHONE_JA = re.compile(
    _NO_DIGIT_BEFORE + "(?:"
    rf"{_OPEN}\s?[0０]{_D}{{1,4}}\s?{_CLOSE}\s?{_D}{{1,4}}{_SEP}{_D}{{3,4}}"  # (03)1234-5678
    rf"|[0０]{_D}{{1,4}}\s?{_OPEN}\s?{_D}{{1,4}}\s?{_CLOSE}\s?{_D}{{3,4}}"  # 03(1234)5678
    rf"|[0０]{_D}{{1,4}}{_SEP}{_D}{{1,4}}{_SEP}{_D}{{3,4}}"  # 03-1234-5678, 090 1234 5678
    rf"|[0０][2-9２-９][0０]{_D}{{8}}|[0０][1１][2２][0０]{_D}{{6}}|[0０][8８][0０]{2}{_D}{{7}}"  # 09012345678, 0120…
    ")" + _NO_DIGIT_AFTER)
# +81: the national number without its 0 (9 or 10 digits), groups separated or not, an optional "(0)"
_PHONE_INTL = re.compile(
    rf"(?<![0-9０-９+＋])[+＋]{_D}{{1,3}}(?:{_SEP}?{_OPEN}[0０]{_CLOSE})?(?:{_SEP}?(?:{_OPEN}{_D}{{1,4}}{_CLOSE}|{_D}{{1,4}})){{2,5}}"
    + _NO_DIGIT_AFTER)
_MY_NUMBER = re.compile(rf"{_NO_GROUP_BEFORE}{_D}{{4}}{_SEP}?{_D}{{4}}{_SEP}?{_D}{{4}}{_NO_GROUP_AFTER}")
_CARD = re.compile(rf"{_NO_GROUP_BEFORE}{_D}(?:{_SEP}?{_D}){{12,18}}{_NO_GROUP_AFTER}")
_IPV4 = re.compile(rf"(?<![0-9０-９.．])(?:{_D}{{1,3}}[.．]){{3}}{_D}{{1,3}}(?![0-9０-９]|[.．]{_D})")
_HEX = "[0-9A-Fa-f０-９Ａ-Ｆａ-ｆ]"
# starts with a hex group or "::" (so "IPv6:2001:db8::1" is found after its label's colon)
_IPV6 = re.compile(rf"(?<!{_HEX})(?<!{_HEX}[:：])(?:{_HEX}{{1,4}}|[:：](?=[:：]))(?:[:：]{_HEX}{{0,4}}){{1,7}}"
                   rf"(?!{_HEX}|[:：])")
_POSTAL = re.compile(rf"〒\s?{_D}{{3}}{_HYPHEN}{_D}{{4}}(?!{_D})")


def _nfkc(s: str) -> str:
    return unicodedata.normalize("NFKC", s)


def _digits(s: str) -> str:
    return "".join(c for c in _nfkc(s) if "0" <= c <= "9")


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


def card_issuer(d: str) -> Optional[str]:
    """The card network whose prefix (IIN range) and length the digits have, or None."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (p2 in (36, 38, 39) or 300 <= p3 <= 305) and 14 <= n <= 19:
        return "diners"
    if (p4 == 6011 or p2 in (62, 65) or 644 <= p3 <= 649) and 16 <= n <= 19:
        return "discover_unionpay"
    return None


def _card(m: str) -> bool:
    d = _digits(m)
    groups = re.split(rf"{_SEP}", _nfkc(m))
    if len(groups) > 1 and min(map(len, groups)) < 4:  # cards are written in groups of 4–6, never 1–3
        return False
    return 13 <= len(d) <= 19 and card_issuer(d) is not None and luhn_valid(d)


def _phone_ja(m: str) -> bool:
    d = _digits(m)
    if d[1] == "0":
        return False  # no Japanese number starts 00 (that is an international call prefix or a code)
    if len(d) == 10:
        return True  # landlines, 0120, 0570
    return len(d) == 11 and (d[:3] in ("020", "050", "060", "070", "080", "090") or d[:4] == "0800")


def _phone_intl(m: str) -> bool:
    d = _digits(m)
    if d.startswith("81"):
        national = d[2:]
        if "(0)" in _nfkc(m).replace(" ", ""):
            national = national[1:]  # the written trunk prefix "(0)" is not dialled from abroad
        return len(national) in (9, 10) and national[0] != "0"
    return 8 <= len(d) <= 15


def _ipv4(m: str) -> bool:
    parts = _nfkc(m).split(".")
    return all(p == "0" or (not p.startswith("0") and int(p) <= 255) for p in parts)


def _ipv6(m: str) -> bool:
    m = _nfkc(m)
    if m.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", m):
        return False
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", m):  # a time of day, not an address
        return False
    if sum(1 for g in m.split(":") if g) < 2 and m != "::1":  # "Foo::bar" in code, not an address
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
    ("phone", _PHONE_INTL, "<PHONE>", _phone_intl),
    ("phone", _PHONE_JA, "<PHONE>", _phone_ja),
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
