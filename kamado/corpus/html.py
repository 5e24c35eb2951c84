"""Bytes → text: charset detection for Japanese pages, and HTML → main text.

Charset order (what browsers do, cheapest first): a BOM, the declared charset (HTTP header, then
`<meta charset>`), strict UTF-8, then charset-normalizer's guess. Declared Shift_JIS is read as cp932 (its
Microsoft superset, which is what Japanese pages labelled Shift_JIS actually use), EUC-JP as euc_jis_2004.
HTML extraction is trafilatura (boilerplate removal tuned on web pages; keeps tables and code lines),
with lxml's plain text as the fallback when trafilatura finds no main content.
"""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-]+)""", re.I)
_HTML_START = re.compile(r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)
_ALIASES = {"shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "windows-31j": "cp932",
            "ms_kanji": "cp932", "euc-jp": "euc_jis_2004", "euc_jp": "euc_jis_2004", "x-euc-jp": "euc_jis_2004"}


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str | None, str | None]:
    """Return (text, encoding used), or (None, None) when nothing fits."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(enc, errors="replace"), enc
    candidates = [_codec(declared)]
    m = _META_CHARSET.search(data[:4096])
    if m:
        candidates.append(_codec(m.group(1).decode("ascii", "ignore")))
    candidates.append("utf-8")
    for enc in candidates:
        if enc:
            try:
                return data.decode(enc), enc
            except (UnicodeDecodeError, LookupError):
                continue
    from charset_normalizer import from_bytes

    best = from_bytes(data, cp_isolation=["cp932", "euc_jp", "iso2022_jp", "utf_8", "utf_16", "latin_1"]).best()
    if best is None:
        return None, None
    return str(best), best.encoding


def looks_like_html(text: str) -> bool:
    return bool(_HTML_START.match(text[:2048]))


class HtmlParseError(ValueError):
    """The page could not be parsed at all; readers count it as `rejected:html_parse_error` with this message."""


def html_to_text(html: str) -> str:
    """Main text of a page (paragraphs on their own lines); "" when the page holds none.

    Raises HtmlParseError when neither trafilatura nor lxml can parse the page (its own reject reason, not
    "empty": a parser failure is not an empty page)."""
    import trafilatura
    import lxml.etree
    import lxml.html

    text = trafilatura.extract(html, include_comments=False, include_tables=True, include_images=False,
                               favor_recall=True, deduplicate=False, with_metadata=False)
    if text:
        return text
    # trafilatura found no "main content" (e.g. a page of only lists): keep the visible text
    try:  # lxml refuses a str that carries an XML encoding declaration (XHTML): the text is decoded already
        root = lxml.html.fromstring(_XML_DECL.sub("", html, count=1))
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError) as exc:
        raise HtmlParseError(f"lxml: {exc}") from exc
    for bad in root.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    lines = (line.strip() for line in root.text_content().splitlines())
    return "\n".join(line for line in lines if line)
