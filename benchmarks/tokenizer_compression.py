"""Benchmark 1 + 3 of issue 6: compression (chars/token, lossless) of kamado tokenizers trained on
../shared/data/{prose,web} against the llm-jp reference tokenizers in ../shared/tokenizers, same run, same text;
plus training time and peak memory of each training run (and against input size with --sizes).

Evaluation text was never trained on: JGLUE valid sets (JNLI, JSTS, JCommonsenseQA), JSQuAD's Wikipedia contexts,
and 5% of the prose/web documents held back by a hash of their text. Every tokenizer must round-trip every text.

    python benchmarks/tokenizer_compression.py                 # final recipe at 32k and 48k + references (~10 min)
    python benchmarks/tokenizer_compression.py --ablations     # + one row per choice at 48k (sampled input)
    python benchmarks/tokenizer_compression.py --vocab --sizes 25000 50000 100000 200000   # time / memory vs input
    python benchmarks/tokenizer_compression.py --vocab 48000 --side --prune-from 64000   # side rows + pruning
    python benchmarks/tokenizer_compression.py --vocab --prune-from 128000 --only "pruning source"  # pruning alone

The shared data holds 156,367 distinct training lines (11.8M characters): larger --sizes sample all of them.
The pruning rows cut the --prune-from model to --prune-to pieces three ways (top by score, by use + renormalized,
by use + Viterbi re-scored; kamado/tokenizer/prune.py) and, when --prune-to is also trained, re-score it alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's kamado, not another install
from tokenizer_common import eval_sets, load_sources, reference_models, require_data  # noqa: E402

from kamado.tokenizer.config import TokenizerConfig  # noqa: E402

AOZORA = "prose/aozora_pd9_plain.jsonl.gz"

# llm-jp v2 recipe as the issue states it: unigram, identity normalization, split digits, byte fallback, max piece 8.
PLAIN = dict(vocab_size=48_000, model_type="unigram", max_piece_length=8, split_by_unicode_script=True,
             dedup_lines=False, newline_token=False, allow_whitespace_only_pieces=False, source_weights={})
# What kamado's recipe uses for Japanese (each step is one row of --ablations).
STEPS = [
    ("+ max piece 16", dict(max_piece_length=16)),
    ("+ pieces across script/punctuation", dict(split_by_unicode_script=False)),
    ("+ drop duplicate lines", dict(dedup_lines=True)),
    ("+ Aozora (old literature) weight 0.3", dict(source_weights={AOZORA: 0.3})),
    ("+ newline, whitespace-run pieces", dict(newline_token=True, allow_whitespace_only_pieces=True)),
]
SIDE = [  # one change against the final recipe, to show its effect
    ("final, digits not split", dict(split_digits=False)),
    # pieces cannot cross MeCab words, so the sample may not hold vocab_size pieces: take what it gives (the row's vocab)
    ("final, MeCab pre-split (llm-jp v2)", dict(presplit="mecab", allow_smaller_vocab=True)),
    ("final, BPE", dict(model_type="bpe")),
]


def final_recipe(vocab: int) -> dict:
    cfg = dict(PLAIN)
    for _, change in STEPS:
        cfg.update(change)
    cfg["vocab_size"] = vocab
    return cfg


def _train_child(cfg_dict: dict, text: str, prefix: str, threads: int, queue) -> None:
    """Runs in a fresh (spawned) process so that its peak RSS is the trainer's alone."""
    from kamado.tokenizer.train import train_sentencepiece

    start = time.time()
    cfg = TokenizerConfig(**cfg_dict)
    train_sentencepiece(cfg, Path(text), Path(prefix), num_threads=threads)
    queue.put({"seconds": time.time() - start, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def train(name: str, cfg_dict: dict, sources: dict, work: Path, threads: int, keep_sample: int = 0) -> dict:
    """Train in a child process; with keep_sample, also return that many seeded random lines of the training text
    (the pruning rows count piece use on them, as the trainer's own sample is not written out)."""
    from kamado.tokenizer.presplit import DELIMITER
    from kamado.tokenizer.train import write_training_text

    cfg = TokenizerConfig(**cfg_dict)
    text = work / f"{name}.txt"
    docs = ((src, d) for src, ds in sources.items() for d in ds)
    t0 = time.time()
    stats = write_training_text(docs, text, cfg)
    prep = time.time() - t0
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_train_child, args=(cfg_dict, str(text), str(work / name), threads, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"training {name} failed (exit {p.exitcode})")
    res = q.get()
    sample = []
    if keep_sample:
        lines = text.read_text(encoding="utf-8").replace(DELIMITER, "").splitlines()
        sample = random.Random(0).sample(lines, min(keep_sample, len(lines)))
    text.unlink()
    return {"model": str(work / f"{name}.model"), "lines": stats.lines, "chars": stats.chars, "prep_s": prep,
            "sample": sample, **res}


def evaluate_model(model: str, sets: dict[str, list[str]]) -> dict:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    out, c_all, t_all, bytes_fb = {}, 0, 0, 0
    for name, texts in sets.items():
        ids = sp.encode(texts)
        if sp.decode(ids) != texts:
            bad = sum(a != b for a, b in zip(sp.decode(ids), texts))
            raise SystemExit(f"{model}: round trip failed on {bad} {name} texts: not lossless")
        c, t = sum(map(len, texts)), sum(map(len, ids))
        out[name] = c / t
        c_all, t_all = c_all + c, t_all + t
        bytes_fb += sum(sp.is_byte(i) for x in ids for i in x)
    out["all"] = c_all / t_all
    out["byte_fb"] = bytes_fb / t_all
    out["vocab"] = sp.get_piece_size()
    return out


def cut_by_score(model: str, vocab_size: int, out: Path) -> None:
    """The control for pruning by use: keep the highest-scored pieces (what SentencePiece's final cut does)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from kamado.tokenizer.prune import _protected

    proto = pb.ModelProto()
    proto.ParseFromString(Path(model).read_bytes())
    free = vocab_size - sum(_protected(p) for p in proto.pieces)
    best = set(sorted((i for i, p in enumerate(proto.pieces) if not _protected(p)), key=lambda i: -proto.pieces[i].score)[:free])
    kept = [p for i, p in enumerate(proto.pieces) if _protected(p) or i in best]
    del proto.pieces[:]
    proto.pieces.extend(kept)
    proto.trainer_spec.vocab_size = len(kept)
    out.write_bytes(proto.SerializeToString())


def prune_rows(samples: dict, big: int, small: int, work: Path, sets: dict) -> list[dict]:
    """Vocabulary pruning and re-scoring rows: the `big` model cut to `small` pieces in three ways, and the
    `small` model (if trained in this run) re-scored from its Viterbi counts without pruning."""
    from kamado.tokenizer.prune import prune_model, rescore_model

    model, sample = samples[big]
    rows = []
    tag = f"{big // 1000}k → {small // 1000}k"
    out = work / "score.model"
    t0 = time.time()
    cut_by_score(model, small, out)
    rows.append({"tokenizer": f"final {tag}, top pieces by score", **evaluate_model(str(out), sets), "prune_s": time.time() - t0})
    for rescoring in ("renormalize", "viterbi"):
        out = work / f"use-{rescoring}.model"
        t0 = time.time()
        prune_model(model, sample, small, out, rescoring=rescoring)
        rows.append({"tokenizer": f"final {tag}, pruned by use, {rescoring}", **evaluate_model(str(out), sets),
                     "prune_s": time.time() - t0})
    if small in samples:
        out = work / "rescored.model"
        rescore_model(samples[small][0], samples[small][1], out, "viterbi")
        rows.append({"tokenizer": f"final {small // 1000}k, Viterbi re-scored (no pruning)", **evaluate_model(str(out), sets)})
    for r in rows:
        print(f"  {r['tokenizer']}: {r['all']:.3f} chars/token", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, nargs="*", default=[32_000, 48_000],
                    help="final recipe at these sizes (`--vocab` alone: none, e.g. for a --sizes sweep only)")
    ap.add_argument("--sample-lines", type=int, default=600_000, help="input_sentence_size: lines the trainer samples")
    ap.add_argument("--ablations", action="store_true", help="one row per recipe choice, at 48k")
    ap.add_argument("--side", action="store_true",
                    help="only the one-change rows (digits not split, MeCab pre-split, BPE) + the final recipe, "
                         "at --side-vocab, without the cumulative chain of --ablations")
    ap.add_argument("--side-vocab", type=int, default=48_000)
    ap.add_argument("--prune-from", type=int, default=0,
                    help="train the final recipe at this vocabulary, prune it to --prune-to by use on the sample")
    ap.add_argument("--prune-to", type=int, default=48_000)
    ap.add_argument("--keep-models", help="write the pruned models into this folder (else a temporary one)")
    ap.add_argument("--only", nargs="+", default=[], help="train only the rows whose label holds one of these strings")
    ap.add_argument("--sizes", type=int, nargs="*", default=[], help="also train the final recipe at these sample sizes")
    ap.add_argument("--sizes-vocab", type=int, default=48_000, help="vocabulary of the --sizes runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-chars", type=int, default=400_000, help="characters per evaluation set")
    ap.add_argument("--json", help="write all figures here")
    args = ap.parse_args()
    require_data()

    data = load_sources()
    sets = eval_sets(data["heldout"], args.eval_chars)
    print("evaluation text (unseen):", {k: f"{len(v)} texts / {sum(map(len, v)):,} chars" for k, v in sets.items()})
    print("training text:", f"{sum(len(d) for ds in data['train'].values() for d in ds):,} chars in",
          f"{sum(map(len, data['train'].values())):,} documents")
    runs: list[tuple[str, dict]] = []
    if args.ablations:
        cfg = dict(PLAIN)
        runs.append(("llm-jp v2-style plain unigram", dict(cfg)))
        for label, change in STEPS:
            cfg.update(change)
            runs.append((label, dict(cfg)))
        for label, change in SIDE:
            runs.append((label, {**final_recipe(48_000), **change}))
    for v in args.vocab:
        if not (args.ablations and v == 48_000):  # the last ablation step is the final recipe at 48k
            runs.append((f"kamado final {v // 1000}k", final_recipe(v)))
    if args.prune_from:
        runs.append((f"kamado final {args.prune_from // 1000}k (pruning source)", final_recipe(args.prune_from)))
    if args.side and not args.ablations:
        if args.side_vocab not in args.vocab:
            runs.append((f"kamado final {args.side_vocab // 1000}k", final_recipe(args.side_vocab)))
        for label, change in SIDE:
            runs.append((label.replace("final", f"final {args.side_vocab // 1000}k"),
                         {**final_recipe(args.side_vocab), **change}))
    for n in args.sizes:
        runs.append((f"kamado final {args.sizes_vocab // 1000}k, {n:,} lines",
                     {**final_recipe(args.sizes_vocab), "input_sentence_size": n}))

    if args.only:
        runs = [(label, cfg) for label, cfg in runs if any(o in label for o in args.only)]
    rows = []
    samples: dict[int, tuple[str, list[str]]] = {}  # vocab → (model, training-text sample) for the pruning rows
    with tempfile.TemporaryDirectory(prefix="kamado-tokbench-") as tmp:
        for i, (label, cfg) in enumerate(runs):
            cfg.setdefault("input_sentence_size", args.sample_lines)
            keep = args.sample_lines if (args.prune_from and (cfg["vocab_size"] in (args.prune_from, args.prune_to))
                                         and label.startswith("kamado final")) else 0
            t = train(f"run{i}", cfg, data["train"], Path(tmp), args.threads, keep_sample=keep)
            if keep:
                samples[cfg["vocab_size"]] = (t["model"], t["sample"])
            r = {"tokenizer": label, **evaluate_model(t["model"], sets), "train_s": t["seconds"],
                 "peak_rss_mb": t["peak_rss_mb"], "lines_in": t["lines"], "sampled": min(t["lines"], cfg["input_sentence_size"]),
                 "config": {k: v for k, v in cfg.items()}}
            rows.append(r)
            print(f"  trained {label}: {r['all']:.3f} chars/token, {t['seconds']:.0f} s, {t['peak_rss_mb']:.0f} MB, "
                  f"{r['sampled']:,} of {t['lines']:,} lines", flush=True)
            if args.prune_from and label.endswith("(pruning source)"):
                keep_dir = Path(args.keep_models or tmp)
                keep_dir.mkdir(parents=True, exist_ok=True)
                rows += prune_rows(samples, args.prune_from, args.prune_to, keep_dir, sets)
            if args.json:  # after every row: a run stopped part-way keeps what it measured
                Path(args.json).write_text(json.dumps(rows, ensure_ascii=False, indent=2))
        for ref in reference_models():
            rows.append({"tokenizer": ref.name, **evaluate_model(str(ref), sets)})

    anchor = next((r for r in rows if "ver2.2" in r["tokenizer"] and r["vocab"] < 50_000), None)
    names = list(sets)
    print("\n| tokenizer | vocab | " + " | ".join(names) + " | all chars/token | ratio vs llm-jp v2.2 48k | byte-fb % | train s | peak MB |")
    print("|---|---|" + "---|" * (len(names) + 5))
    for r in rows:
        ratio = f"{r['all'] / anchor['all']:.3f}" if anchor else "–"
        train_s = f"{r['train_s']:.0f}" if "train_s" in r else "–"
        mem = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "–"
        print(f"| {r['tokenizer']} | {r['vocab']:,} | " + " | ".join(f"{r[n]:.3f}" for n in names)
              + f" | **{r['all']:.3f}** | {ratio} | {100 * r['byte_fb']:.3f} | {train_s} | {mem} |")
    print("\nround trip: 100% for every tokenizer on every text (checked; a failure stops the benchmark)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
