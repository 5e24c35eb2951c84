"""Filter throughput: kamado's Japanese rules vs HojiChar running the equivalent rules, in the same run.

    pip install hojichar emoji    # the reference (emoji: its fugashi rule needs it); not kamado dependencies
    python benchmarks/corpus_filters.py [--data ../shared/data/web] [--repeat 3]

Both sides get the same documents (HTML pages are turned into text once, beforehand, untimed), run in one
process (figures are per core), normalize with NFKC, and stop a document at its first failing rule (HojiChar's
Compose skips rejected documents; kamado's apply_filters returns the first reason). Rules, in the same order:

  kamado                                  HojiChar
  NFKC normalize                          DocumentNormalizer
  length 400..200,000                     DocumentLengthFilter(400, 200000)
  character classes (ja/hira/kata)       AcceptJapanese
  NG words, word boundaries, fraction     DiscardAdultContentJa + DiscardDiscriminationContentJa + DiscardViolenceContentJa
  sentence length (avg 20..90, max 200)   DiscardRareKuten(max_average_sentence_length=90)
  ellipsis sentences ≤ 0.2                DiscardTooManyEndingEllipsis(0.2)
  duplicate lines/paragraphs +            CharRepetitionRatioFilter(0.33, 5)
  top/duplicate char n-grams (2..10)      [+ WordRepetitionRatioFilter (fugashi) in the "full" row]

kamado's side does more work per rule (three character fractions, nine n-gram sizes, line and paragraph
repetition), HojiChar's "core" row leaves out its fugashi word-repetition rule; the "full" row adds it.
Also printed: how many documents each side's NG-word rules drop per file (the false-positive question).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from kamado.corpus.filters import (CharacterClassFilter, LengthFilter, LineShapeFilter, NgramRepetitionFilter,
                                   NgWordFilter, RepetitionFilter, SentenceLengthFilter, apply_filters)
from kamado.corpus.normalize import normalize
from kamado.corpus.readers import Rejected, iter_source_file

ROOT = Path(__file__).resolve().parents[1]
FILES = {  # file: (text field, id field)
    "abeja_cc_ja_sample_99docs.jsonl.gz": ("text", "sample_id"),
    "kwdlc_web_document_leads.jsonl.gz": ("text", "doc_id"),
    "debian_ja_docs_pages.jsonl.gz": ("content", "uri"),
    "lilypond_doc_ja_pages.jsonl.gz": ("content", "uri"),
}


def load(data: Path) -> dict[str, list[str]]:
    out = {}
    for name, (tf, idf) in FILES.items():
        texts = []
        for _, doc in iter_source_file(str(data / name), "auto", tf, idf, name):
            if not isinstance(doc, Rejected):
                texts.append(doc["text"])
        out[name] = texts
    return out


def kamado_chain():
    return [LengthFilter(400, 200_000), CharacterClassFilter(0.5, 0.2, 0.5), NgWordFilter(0.03),
            SentenceLengthFilter(20, 90, 200), LineShapeFilter(0.2, 1.0), RepetitionFilter(0.3, 0.3, 0.2, 0.2),
            NgramRepetitionFilter({2: 0.20, 3: 0.18, 4: 0.16}, {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})]


def hojichar_chain(full: bool):
    from hojichar import Compose, document_filters as df

    filters = [df.DocumentNormalizer(), df.DocumentLengthFilter(400, 200_000), df.AcceptJapanese(),
               df.DiscardAdultContentJa(), df.DiscardDiscriminationContentJa(), df.DiscardViolenceContentJa(),
               df.DiscardRareKuten(max_average_sentence_length=90), df.DiscardTooManyEndingEllipsis(0.2),
               df.CharRepetitionRatioFilter(0.33, 5)]
    if full:
        filters.append(df.WordRepetitionRatioFilter())
    return Compose(filters)


def run_kamado(texts: list[str], chain) -> tuple[float, Counter]:
    drops: Counter = Counter()
    t = time.perf_counter()
    for i, text in enumerate(texts):
        doc = {"id": str(i), "text": normalize(text), "meta": {}}
        drops[apply_filters(chain, doc) or "kept"] += 1
    return time.perf_counter() - t, drops


def run_hojichar(texts: list[str], compose) -> tuple[float, Counter]:
    from hojichar import Document

    drops: Counter = Counter()
    t = time.perf_counter()
    for text in texts:
        doc = compose.apply(Document(text))
        drops["rejected" if doc.is_rejected else "kept"] += 1
    return time.perf_counter() - t, drops


def ng_drops(texts: list[str]) -> tuple[int, int]:
    """Documents dropped by NG-word rules alone: (kamado word-boundary fraction, HojiChar substring lists)."""
    from hojichar import Compose, Document, document_filters as df

    ours = NgWordFilter(0.03)
    theirs = Compose([df.DocumentNormalizer(), df.DiscardAdultContentJa(), df.DiscardDiscriminationContentJa(),
                      df.DiscardViolenceContentJa()])
    k = sum(apply_filters([ours], {"id": "", "text": normalize(t), "meta": {}}) is not None for t in texts)
    h = sum(theirs.apply(Document(t)).is_rejected for t in texts)
    return k, h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "web"))
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings per side")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    import hojichar

    t0 = time.perf_counter()
    corpus = load(Path(args.data))
    print(f"loaded {sum(map(len, corpus.values())):,} documents from {args.data} in {time.perf_counter() - t0:.1f}s "
          f"(HTML → text with trafilatura, untimed); hojichar {getattr(hojichar, '__version__', '?')}")
    chain = kamado_chain()
    core, full = hojichar_chain(False), hojichar_chain(True)  # built once: HojiChar builds a Tagger per filter
    run_kamado(corpus["abeja_cc_ja_sample_99docs.jsonl.gz"][:5], chain)  # warm-up: fugashi Tagger, numpy
    rows = []
    header = f"{'file':<36}{'docs':>6}{'MB':>7} | {'kamado docs/s':>13}{'MB/s':>7} | {'hojichar':>9}{'MB/s':>7}{'ratio':>7} | {'hoji+wordrep':>12}{'ratio':>7} | kept k/h"
    print(header)
    print("-" * len(header))
    totals = Counter()
    for name, texts in [*corpus.items(), ("ALL", [t for ts in corpus.values() for t in ts])]:
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        tk, dk = min((run_kamado(texts, chain) for _ in range(args.repeat)), key=lambda r: r[0])
        th, dh = min((run_hojichar(texts, core) for _ in range(args.repeat)), key=lambda r: r[0])
        tf, _ = min((run_hojichar(texts, full) for _ in range(args.repeat)), key=lambda r: r[0])
        n = len(texts)
        print(f"{name:<36}{n:>6}{mb:>7.2f} | {n / tk:>13,.0f}{mb / tk:>7.2f} | {n / th:>9,.0f}{mb / th:>7.2f}{th / tk:>7.2f} | "
              f"{n / tf:>12,.0f}{tf / tk:>7.2f} | {dk['kept']}/{dh['kept']}")
        rows.append({"file": name, "docs": n, "mb": mb, "kamado_s": tk, "hojichar_s": th, "hojichar_full_s": tf,
                     "kamado_kept": dk["kept"], "hojichar_kept": dh["kept"], "kamado_drops": dict(dk)})
    print("\nratio = HojiChar time / kamado time (> 1: kamado faster), best of", args.repeat, "runs, one process")
    print("\nNG-word rules alone, documents dropped (kamado word-boundary fraction ≤ 0.03 vs HojiChar substring lists):")
    for name, texts in corpus.items():
        k, h = ng_drops(texts)
        print(f"  {name:<36}{len(texts):>6} docs: kamado {k:>4} ({100 * k / len(texts):5.1f}%)   hojichar {h:>4} ({100 * h / len(texts):5.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
