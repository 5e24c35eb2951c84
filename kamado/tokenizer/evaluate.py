"""Tokenizer evaluation (nanochat tok_eval-style, for Japanese): several tokenizers side by side on the same text.

Any SentencePiece `.model` file or Hugging Face tokenizer folder. Per tokenizer and text file: chars/token and
bytes/token (compression), tokens per MeCab word (how finely words are cut), byte-fallback and unknown rates,
the byte-fallback share by character class (hiragana, katakana, kanji, full-width symbols, ASCII, other:
which characters the vocabulary lacks), round-trip identity (decode(encode(t)) == t) and, for a folder holding both tokenizer.json and tokenizer.model,
the share of texts where Hugging Face and SentencePiece give the same ids (and how many of the others are exact
ties: the same pieces in another order, equally scored; see `segmentation_tie`).

    kamado tokenizer eval --tokenizer runs/x/tokenizer/hf ../shared/tokenizers/llmjp_*.model --text held.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kamado.tokenizer.charset import CLASSES, char_class

BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class EvalInputError(ValueError):
    """A tokenizer path or text file that cannot be used; the message names it (and the line)."""


# ------------------------------------------------------------------ tokenizers
@dataclass
class Tokenizer:
    """One tokenizer behind a small interface: encode a batch, decode one, which ids are bytes / unknown."""

    name: str
    kind: str  # sentencepiece | hf
    vocab_size: int
    encode: Callable[[list[str]], list[list[int]]]
    decode: Callable[[list[int]], str]
    byte_ids: frozenset[int]
    unk_id: int | None
    byte_values: dict[int, int] = field(default_factory=dict)  # byte-fallback id → the byte it stands for
    reference: object | None = None  # the SentencePiece processor of an HF folder's tokenizer.model


def segmentation_tie(sp, a: list[int], b: list[int]) -> bool:
    """Two different id lists for one text that are equally good for the unigram model: the same total score
    (within float32 rounding, which SentencePiece accumulates in). They arise where a text repeats a pattern
    ("ばらんばらん", "…………………") and the same pieces can be put in another order; SentencePiece and HF break
    such ties differently. A conversion bug would give a different score, not a tie."""
    sa = sum(sp.get_score(i) for i in a)
    sb = sum(sp.get_score(i) for i in b)
    return sp.decode(a) == sp.decode(b) and abs(sa - sb) <= 1e-4 * max(len(a), len(b), 1)


def _processor(path: Path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as exc:
        raise EvalInputError(f"{path}: not a SentencePiece model ({str(exc).splitlines()[0][:120]})") from None
    return sp


def _sentencepiece(path: Path) -> Tokenizer:
    sp = _processor(path)
    n = sp.get_piece_size()
    return Tokenizer(
        name=path.name, kind="sentencepiece", vocab_size=n,
        encode=lambda texts: sp.encode(texts), decode=lambda ids: sp.decode(ids),
        byte_ids=frozenset(i for i in range(n) if sp.is_byte(i)), unk_id=sp.unk_id(),
        byte_values={i: int(sp.id_to_piece(i)[3:5], 16) for i in range(n) if sp.is_byte(i)})


def _hf(path: Path) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds; all mean "not a tokenizer folder we can load"
        raise EvalInputError(f"{path}: not a loadable Hugging Face tokenizer folder ({str(exc).splitlines()[0][:160]})") from None
    vocab = tok.get_vocab()
    ref = None
    if (path / "tokenizer.model").is_file():
        ref = _processor(path / "tokenizer.model")
    return Tokenizer(
        name=path.name if path.name not in ("hf", "tokenizer") else f"{path.parent.name}/{path.name}", kind="hf",
        vocab_size=len(tok),
        encode=lambda texts: tok(texts, add_special_tokens=False)["input_ids"],
        decode=lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
        byte_ids=frozenset(i for p, i in vocab.items() if BYTE_PIECE.match(p)),
        unk_id=tok.unk_token_id, reference=ref,
        byte_values={i: int(p[3:5], 16) for p, i in vocab.items() if BYTE_PIECE.match(p)})


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A `.model` file (SentencePiece) or a folder (Hugging Face; its tokenizer.model, if any, is the reference)."""
    path = Path(path)
    if path.is_dir():
        return _hf(path)
    if path.is_file():
        return _sentencepiece(path)
    raise EvalInputError(f"{path}: no such tokenizer file or folder")


# ------------------------------------------------------------------ texts
def _open_bytes(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """JSONL (.jsonl, .json, optionally .gz/.zst): the `field` of each record; anything else: one text per non-empty
    line. Bad bytes or records are errors naming the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: text file not found")
    stem = path.name.removesuffix(".gz").removesuffix(".zst")
    jsonl = stem.endswith((".jsonl", ".json"))
    texts = []
    with _open_bytes(path) as raw:
        for line_no, data in enumerate(io.BufferedReader(raw) if path.suffix == ".zst" else raw, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EvalInputError(f"{path}:{line_no}: not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 4]!r})") from None
            if not line.strip():
                continue
            if not jsonl:
                texts.append(line.rstrip("\n"))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            value = rec.get(field) if isinstance(rec, dict) else None
            if not isinstance(value, str):
                raise EvalInputError(f"{path}:{line_no}: field '{field}' missing or not a string")
            texts.append(value)
    if not texts:
        raise EvalInputError(f"{path}: holds no text")
    return texts


# ------------------------------------------------------------------ metrics
@dataclass
class Scores:
    texts: int = 0
    chars: int = 0
    bytes: int = 0
    tokens: int = 0
    words: int = 0
    byte_tokens: int = 0
    unk_tokens: int = 0
    round_trip_ok: int = 0
    agree: int | None = None
    ties: int = 0  # texts where HF and SentencePiece ids differ only by an equally scored segmentation
    mismatch_examples: list[str] = field(default_factory=list)
    class_chars: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    class_byte_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    class_fallback_chars: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))

    def add_classes(self, other: "Scores") -> None:
        for mine, theirs in ((self.class_chars, other.class_chars), (self.class_byte_tokens, other.class_byte_tokens),
                             (self.class_fallback_chars, other.class_fallback_chars)):
            for k, v in theirs.items():
                mine[k] += v

    def by_class(self) -> dict:
        """Per character class: its characters, the byte-fallback tokens its characters cost, those as a share of
        all tokens (the shares add up to byte_fallback_rate) and the share of its characters that fell back."""
        t = max(self.tokens, 1)
        return {c: {"chars": self.class_chars[c], "byte_tokens": self.class_byte_tokens[c],
                    "share_of_tokens": round(self.class_byte_tokens[c] / t, 6),
                    "chars_fallback_rate": round(self.class_fallback_chars[c] / max(self.class_chars[c], 1), 6)}
                for c in CLASSES}

    def summary(self) -> dict:
        t = max(self.tokens, 1)
        return {
            "texts": self.texts, "chars": self.chars, "tokens": self.tokens,
            "chars_per_token": round(self.chars / t, 4),
            "bytes_per_token": round(self.bytes / t, 4),
            "tokens_per_word": round(self.tokens / self.words, 4) if self.words else None,
            "byte_fallback_rate": round(self.byte_tokens / t, 6),
            "unk_rate": round(self.unk_tokens / t, 6),
            "round_trip": round(self.round_trip_ok / max(self.texts, 1), 6),
            "round_trip_failures": self.texts - self.round_trip_ok,
            "sp_hf_agreement": None if self.agree is None else round(self.agree / max(self.texts, 1), 6),
            "sp_hf_ties": None if self.agree is None else self.ties,
            "sp_hf_mismatches": None if self.agree is None else self.texts - self.agree - self.ties,
            "sp_hf_mismatch_examples": self.mismatch_examples,
            "byte_fallback_by_class": self.by_class(),
        }


def count_fallback(ids: list[int], byte_values: dict[int, int], s: Scores) -> None:
    """Attribute each run of byte-fallback tokens to the characters it spells (UTF-8, one token per byte)."""
    run: list[int] = []
    for i in ids + [-1]:
        if i in byte_values:
            run.append(byte_values[i])
            continue
        if run:
            for ch in bytes(run).decode("utf-8", errors="replace"):
                cls = char_class(ch)
                s.class_byte_tokens[cls] += len(ch.encode("utf-8")) if ch != "\ufffd" else 1
                s.class_fallback_chars[cls] += 1
            run = []


def count_words(texts: list[str]) -> int:
    from kamado.tokenizer.presplit import count_words as words

    return sum(words(t) for t in texts)


def evaluate(tok: Tokenizer, texts: list[str], words: int | None = None, batch: int = 256) -> Scores:
    s = Scores(words=words or 0)
    if tok.reference is not None:
        s.agree = 0
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        ids = tok.encode(chunk)
        ref = tok.reference.encode(chunk) if tok.reference is not None else None
        for j, (text, x) in enumerate(zip(chunk, ids)):
            s.texts += 1
            s.chars += len(text)
            s.bytes += len(text.encode("utf-8"))
            s.tokens += len(x)
            s.byte_tokens += sum(i in tok.byte_ids for i in x)
            for ch in text:
                s.class_chars[char_class(ch)] += 1
            count_fallback(x, tok.byte_values, s)
            s.unk_tokens += sum(i == tok.unk_id for i in x) if tok.unk_id is not None else 0
            s.round_trip_ok += tok.decode(x) == text
            if ref is not None:
                if ref[j] == x:
                    s.agree += 1  # type: ignore[operator]
                elif segmentation_tie(tok.reference, ref[j], x):
                    s.ties += 1
                elif len(s.mismatch_examples) < 3:
                    s.mismatch_examples.append(text[:60])
    return s


def compare(tokenizers: list[str | Path], text_files: list[str | Path], field: str = "text",
            with_words: bool = True) -> dict:
    """Every tokenizer on every text file: {"texts": {...}, "results": [{tokenizer, vocab_size, per_file, all}]}."""
    loaded = [load_tokenizer(p) for p in tokenizers]  # first: a bad path fails before any text is read
    sets = {str(f): read_texts(f, field) for f in text_files}
    words = {name: count_words(t) for name, t in sets.items()} if with_words else {name: 0 for name in sets}
    results = []
    for path, tok in zip(tokenizers, loaded):
        per_file = {name: evaluate(tok, texts, words[name]) for name, texts in sets.items()}
        total = Scores(words=sum(words.values()), agree=None if tok.reference is None else 0)
        for sc in per_file.values():
            for key in ("texts", "chars", "bytes", "tokens", "byte_tokens", "unk_tokens", "round_trip_ok", "ties"):
                setattr(total, key, getattr(total, key) + getattr(sc, key))
            if sc.agree is not None:
                total.agree += sc.agree  # type: ignore[operator]
                total.mismatch_examples += sc.mismatch_examples[: 3 - len(total.mismatch_examples)]
            total.add_classes(sc)
        results.append({"tokenizer": str(path), "name": tok.name, "kind": tok.kind, "vocab_size": tok.vocab_size,
                        "per_file": {k: v.summary() for k, v in per_file.items()}, "all": total.summary()})
    return {"texts": {k: {"texts": len(v), "chars": sum(map(len, v)), "mecab_words": words[k]} for k, v in sets.items()},
            "results": results}


def format_table(report: dict) -> str:
    """A Markdown table, one row per tokenizer: the whole text, then chars/token per file."""
    files = list(report["texts"])
    short = [Path(f).name for f in files]
    head = ["tokenizer", "vocab", "chars/tok", "bytes/tok", "tok/word", "byte-fb %", "unk %", "round trip", "SP=HF"]
    head += [f"c/t {s}" for s in short] if len(files) > 1 else []
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        a = r["all"]
        cells = [r["name"], f"{r['vocab_size']:,}", f"{a['chars_per_token']:.3f}", f"{a['bytes_per_token']:.3f}",
                 "–" if a["tokens_per_word"] is None else f"{a['tokens_per_word']:.3f}",
                 f"{100 * a['byte_fallback_rate']:.3f}", f"{100 * a['unk_rate']:.3f}",
                 f"{100 * a['round_trip']:.2f}%", "–" if a["sp_hf_agreement"] is None else f"{100 * a['sp_hf_agreement']:.2f}%"]
        if len(files) > 1:
            cells += [f"{r['per_file'][f]['chars_per_token']:.3f}" for f in files]
        rows.append("| " + " | ".join(cells) + " |")
    # which characters the vocabulary lacks: byte-fallback tokens per class, % of all tokens (they sum to byte-fb %)
    rows += ["", "byte-fallback tokens by character class, % of all tokens (% of the class's characters that fell back)",
             "| tokenizer | " + " | ".join(CLASSES) + " |", "|" + "---|" * (len(CLASSES) + 1)]
    for r in report["results"]:
        by = r["all"]["byte_fallback_by_class"]
        rows.append(f"| {r['name']} | " + " | ".join(
            f"{100 * by[c]['share_of_tokens']:.3f} ({100 * by[c]['chars_fallback_rate']:.2f})" for c in CLASSES) + " |")
    return "\n".join(rows)


# ------------------------------------------------------------------ command line
def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kamado tokenizer eval",
                                description="Compare tokenizers (.model files or HF folders) on the same texts.")
    p.add_argument("--tokenizer", nargs="+", required=True, metavar="PATH", help="SentencePiece .model or HF tokenizer folder")
    p.add_argument("--text", nargs="+", required=True, metavar="FILE",
                   help="JSONL(.gz/.zst) with a text field, or plain text (one text per line)")
    p.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--json", metavar="OUT", help="also write the full report as JSON")
    p.add_argument("--no-words", action="store_true", help="skip MeCab word counts (tokens per word)")
    args = p.parse_args(list(argv) if argv is not None else None)
    try:
        report = compare(args.tokenizer, args.text, args.field, with_words=not args.no_words)
    except EvalInputError as exc:
        print(f"kamado tokenizer eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0
