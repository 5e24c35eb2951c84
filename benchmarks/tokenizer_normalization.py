"""Issue 17: which normalization contract, measured on raw Japanese text no tokenizer here was trained on.

Each row trains kamado's final tokenizer recipe (benchmarks/tokenizer_compression.py) at --vocab on the shared
prose + web data after the corpus stage's normalization, then encodes the evaluation text as users write it
(JGLUE valid sets, JSQuAD's Wikipedia contexts, held-out web and prose; never normalized):

- `nfkc corpus, identity tokenizer`: the old default; nothing applies NFKC when new text is encoded.
- `nfkc corpus, nfkc tokenizer`: the corpus's NFKC reapplied by the tokenizer (SentencePiece normalization
  rule `nfkc`, exported to Hugging Face as the same precompiled normalizer); decoding gives the NFKC text, so
  the round trip is lossy on any full-width character (both round-trip shares are printed).
- `as written, digits only`: corpus.nfkc false, no required character set.
- `as written + jis_x_0208` (the default now): corpus.nfkc false, tokenizer.required_chars jis_x_0208.

    python benchmarks/tokenizer_normalization.py --only "as written + jis"     # one row (~3-5 min on 2 cores)
    python benchmarks/tokenizer_normalization.py                              # all four rows

Goal (issue 17) at 48k: byte-fallback tokens ≤ 0.5%, ≥ 2.00 chars/token, lossless round trip.
Measured (2026-12-02, 2 busy cores, 1.16M evaluation characters; byte-fb % by class: kanji / full-width symbols):

    row                                chars/tok  byte-fb %  round trip  kanji  fullwidth
    nfkc corpus, identity tokenizer      1.986      8.542     100.00%     0.336   8.099
    nfkc corpus, nfkc tokenizer          2.109      0.437      76.87%     0.356   0.010
    as written, digits only              2.110      0.473     100.00%     0.341   0.025
    as written + jis_x_0208 (default)    2.106      0.188     100.00%     0.002   0.052
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's kamado, not another install
from tokenizer_common import eval_sets, load_sources, require_data  # noqa: E402
from tokenizer_compression import final_recipe, train  # noqa: E402

from kamado.corpus.normalize import normalize  # noqa: E402
from kamado.tokenizer.charset import CLASSES  # noqa: E402
from kamado.tokenizer.evaluate import evaluate, load_tokenizer  # noqa: E402

ROWS = [  # label, corpus NFKC, tokenizer normalization, required_chars
    ("nfkc corpus, identity tokenizer (old default)", True, "identity", "none"),
    ("nfkc corpus, nfkc tokenizer", True, "nfkc", "none"),
    ("as written, digits only", False, "identity", "none"),
    ("as written + jis_x_0208 (default)", False, "identity", "jis_x_0208"),
]


def row(label: str, nfkc: bool, normalization: str, required: str, sources: dict, sets: dict, vocab: int,
        work: Path, threads: int) -> dict:
    cfg = dict(final_recipe(vocab), normalization=normalization, required_chars=required)
    docs = {src: [normalize(d, nfkc=nfkc) for d in ds] for src, ds in sources.items()}
    trained = train(label.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "p"), cfg, docs, work, threads)
    tok = load_tokenizer(trained["model"])
    out = {"row": label, "train_s": round(trained["seconds"], 1), "vocab": tok.vocab_size, "per_set": {}}
    total = None
    nfkc_trip = texts = 0
    for name, texts_ in sets.items():
        sc = evaluate(tok, texts_)
        ids = tok.encode(texts_)
        nfkc_trip += sum(tok.decode(x) == unicodedata.normalize("NFKC", t) for t, x in zip(texts_, ids))
        texts += len(texts_)
        out["per_set"][name] = {k: sc.summary()[k] for k in ("chars_per_token", "byte_fallback_rate", "round_trip")}
        if total is None:
            total = sc
        else:
            for key in ("texts", "chars", "bytes", "tokens", "byte_tokens", "unk_tokens", "round_trip_ok"):
                setattr(total, key, getattr(total, key) + getattr(sc, key))
            total.add_classes(sc)
    s = total.summary()
    prompt = "質問：主に子ども向けのもので、イラストのついた物語が書かれているものはどれ？\n回答："  # kamado's JCQA prompt
    ids = tok.encode([prompt])[0]
    out["jcqa_prompt_tokens"] = [len(ids), sum(i in tok.byte_ids for i in ids)]
    out.update(chars_per_token=s["chars_per_token"], byte_fallback_rate=s["byte_fallback_rate"],
               round_trip=s["round_trip"], round_trip_to_nfkc=round(nfkc_trip / texts, 6),
               byte_fallback_by_class={c: v["share_of_tokens"] for c, v in s["byte_fallback_by_class"].items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=48_000)
    ap.add_argument("--only", nargs="+", default=[], help="rows whose label holds one of these strings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-chars", type=int, default=400_000, help="characters per evaluation set")
    ap.add_argument("--json", help="append each row's figures (one JSON line a row)")
    args = ap.parse_args()
    require_data()
    src = load_sources()
    sets = eval_sets(src["heldout"], args.eval_chars)
    print("eval sets: " + ", ".join(f"{k} {sum(map(len, v)):,} chars" for k, v in sets.items()), flush=True)
    head = ["row", "vocab", "chars/tok", "byte-fb %", "round trip", "trip=NFKC"] + [f"fb% {c}" for c in CLASSES]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label, nfkc, norm, req in ROWS:
            if args.only and not any(o in label for o in args.only):
                continue
            r = row(label, nfkc, norm, req, src["train"], sets, args.vocab, Path(tmp), args.threads)
            print(f"| {label} | {r['vocab']:,} | {r['chars_per_token']:.3f} | {100 * r['byte_fallback_rate']:.3f} | "
                  f"{100 * r['round_trip']:.2f}% | {100 * r['round_trip_to_nfkc']:.2f}% | "
                  + " | ".join(f"{100 * r['byte_fallback_by_class'][c]:.3f}" for c in CLASSES) + " |", flush=True)
            print(f"    JCommonsenseQA prompt: {r['jcqa_prompt_tokens'][0]} tokens, {r['jcqa_prompt_tokens'][1]} byte fallback")
            print("    per set: " + "; ".join(f"{k} {v['chars_per_token']:.3f} c/t, {100 * v['byte_fallback_rate']:.3f}% fb"
                                            for k, v in r["per_set"].items()), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
