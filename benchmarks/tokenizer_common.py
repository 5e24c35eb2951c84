"""Shared data plumbing for the tokenizer benchmarks: training text from ../shared/data/{prose,web} with a
held-out part, and unseen evaluation text (JGLUE valid sets, JSQuAD's Wikipedia contexts, held-out web/prose).

Nothing here is copied into the repository: every file is read from ../shared/data at run time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
REFERENCE_TOKENIZERS = SHARED / "tokenizers"

# (group, file, text field); the web pages hold HTML (or plain text) in `content`.
TRAIN_SOURCES = [
    ("prose", "prose/aozora_pd9_plain.jsonl.gz", "text"),
    ("prose", "prose/jaquad_train_wikipedia_paragraphs.jsonl.gz", "text"),
    ("prose", "prose/wikipedia_annotated_corpus_leads.jsonl.gz", "text"),
    ("web", "web/abeja_cc_ja_sample_99docs.jsonl.gz", "text"),
    ("web", "web/kwdlc_web_document_leads.jsonl.gz", "text"),
    ("web", "web/debian_ja_docs_pages.jsonl.gz", "content"),
    ("web", "web/lilypond_doc_ja_pages.jsonl.gz", "content"),
]
HOLD_OUT = 0.05  # documents held back from training by a hash of their text: the "web"/"prose" eval sets
HOLD_OUT_WEB = 0.25  # the two small modern web sources give a quarter, so the web set is a few hundred kB
# The Debian and LilyPond pages contain each other (single-page manuals hold every split page): a held-out page
# would be seen in training through its big page, so these two are never evaluated (their held-out part is dropped).
NEAR_DUPLICATED = {"web/debian_ja_docs_pages.jsonl.gz", "web/lilypond_doc_ja_pages.jsonl.gz"}


def require_data() -> None:
    if not (DATA / "prose").is_dir():
        sys.exit(f"benchmark needs the shared data at {DATA} (not found)")


class _Text(HTMLParser):
    """HTML → text with the stdlib parser: drop script/style, newline at block ends. Enough for tokenizer text."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table", "section", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    p = _Text()
    p.feed(html)
    lines = (line.rstrip() for line in "".join(p.parts).split("\n"))  # keep code indentation
    return "\n".join(line for line in lines if line.strip())


def held_out(text: str, fraction: float = HOLD_OUT) -> bool:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


def load_sources() -> dict[str, dict[str, list[str]]]:
    """{"train": {file: [doc...]}, "heldout": {group: [doc...]}} for prose + web."""
    out: dict[str, dict[str, list[str]]] = {"train": {}, "heldout": {"prose": [], "web": []}}
    for group, rel, field in TRAIN_SOURCES:
        docs = []
        with gzip.open(DATA / rel, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                text = rec[field]
                if rec.get("content_type") == "text/html":
                    text = html_to_text(text)
                if not text.strip():
                    continue
                if not held_out(text, HOLD_OUT_WEB if group == "web" and rel not in NEAR_DUPLICATED else HOLD_OUT):
                    docs.append(text)
                elif rel not in NEAR_DUPLICATED:
                    out["heldout"][group].append(text)
        out["train"][rel] = docs
    return out


def eval_sets(heldout: dict[str, list[str]], max_chars: int = 400_000, seed: int = 0) -> dict[str, list[str]]:
    """Japanese text no tokenizer here was trained on: JGLUE valid sets, JSQuAD Wikipedia contexts, held-out docs.

    Each set is cut to about max_chars (a seeded sample) so the benchmark stays a few minutes long."""
    jg = DATA / "eval" / "jglue"
    jglue: list[str] = []
    for name in ("jnli-v1.3_valid.json", "jsts-v1.3_valid.json"):
        for line in open(jg / name, encoding="utf-8"):
            rec = json.loads(line)
            jglue += [rec["sentence1"], rec["sentence2"]]
    for line in open(jg / "jcommonsenseqa-v1.3_valid.json", encoding="utf-8"):
        rec = json.loads(line)
        jglue.append(rec["question"] + " " + " ".join(rec[f"choice{i}"] for i in range(5)))
    wiki = []
    for article in json.load(open(jg / "jsquad-v1.3_valid.json", encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            wiki.append(para["context"].split(" [SEP] ", 1)[-1])
    sets = {"jglue": jglue, "wikipedia": wiki, "web": heldout["web"], "prose": heldout["prose"]}
    rng = random.Random(seed)
    out = {}
    for name, texts in sets.items():
        texts = list(texts)
        rng.shuffle(texts)
        kept, n = [], 0
        for t in texts:
            if n >= max_chars:
                break
            t = t[: max_chars - n]  # one huge web page must not fill the set
            kept.append(t)
            n += len(t)
        out[name] = kept
    return out


def reference_models(max_vocab: int = 100_000) -> list[Path]:
    """The llm-jp SentencePiece files in ../shared/tokenizers (v4.0 alpha too, marked by its size)."""
    return sorted(REFERENCE_TOKENIZERS.glob("llmjp_*.model"))
