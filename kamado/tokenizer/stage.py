"""The tokenizer stage: train SentencePiece (or extend a base tokenizer) on the kept corpus, export to HF with a
chat template, evaluate on held-back documents (ids must agree with SentencePiece), encode packed token shards."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import resource
import time
from pathlib import Path

from kamado.recipe import Recipe
from kamado.stage import StageResult, Workspace, write_json_atomic
from kamado.tokenizer.chat_template import chat_template
from kamado.tokenizer.encode import encode_corpus, is_validation
from kamado.tokenizer.evaluate import evaluate, load_tokenizer
from kamado.tokenizer.export import export_hf
from kamado.tokenizer.train import train_sentencepiece, write_training_text

__all__ = ["run", "is_validation"]


def corpus_shards(ws: Workspace) -> list[Path]:
    return sorted((ws.stage_dir("corpus") / "data").glob("shard-*.jsonl.gz"))


def iter_docs(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def build_model(recipe: Recipe, folder: Path, shards: list[Path]) -> tuple[Path, dict]:
    """spm.model from the training documents (validation documents held back); returns (path, counts)."""
    cfg = recipe.tokenizer
    train_txt = folder / "train.txt"
    docs = ((d.get("meta", {}).get("source", ""), d["text"]) for path in shards for d in iter_docs(path)
            if not is_validation(d["id"], cfg.validation_fraction))
    text = write_training_text(docs, train_txt, cfg)
    start = time.time()
    threads = max(1, recipe.corpus.workers)
    if cfg.extend_from:
        from kamado.tokenizer.extend import base_model_type, extend

        # The Japanese pieces come from a model of the base's type; vocab_size is that model's size.
        addition_cfg = dataclasses.replace(cfg, model_type=base_model_type(cfg.extend_from))
        addition = train_sentencepiece(addition_cfg, train_txt, folder / "addition", num_threads=threads)
        ext = extend(cfg.extend_from, addition, folder / "spm.model")
        sp_model = folder / "spm.model"
        extra = {"extended_from": cfg.extend_from, "base_vocab_size": ext.base_size, "added_pieces": ext.added}
    elif cfg.prune_from_vocab_size:
        from kamado.tokenizer.prune import prune_model, sample_lines

        # The larger vocabulary, cut down by piece use on a sample as large as the trainer's own.
        big = train_sentencepiece(dataclasses.replace(cfg, vocab_size=cfg.prune_from_vocab_size), train_txt,
                                  folder / "unpruned", num_threads=threads)
        sp_model = folder / "spm.model"
        pruned = prune_model(big, sample_lines(train_txt, cfg.input_sentence_size, cfg.seed), cfg.vocab_size, sp_model,
                             rescoring=cfg.prune_rescoring)
        big.unlink()
        big.with_suffix(".vocab").unlink(missing_ok=True)
        extra = {"pruned_from": pruned.from_size, "pruned_pieces": pruned.removed, "prune_sample_lines": pruned.sample_lines}
    else:
        sp_model = train_sentencepiece(cfg, train_txt, folder / "spm", num_threads=threads)
        extra = {}
    train_txt.unlink()
    return sp_model, {"train_lines": text.lines, "train_chars": text.chars, "duplicate_lines": text.duplicate_lines,
                      "train_seconds": round(time.time() - start, 2), "peak_rss_mb": round(_peak_rss_mb(), 1), **extra}


def run(recipe: Recipe, ws: Workspace) -> StageResult:
    cfg = recipe.tokenizer
    folder = ws.stage_dir("tokenizer")
    shards = corpus_shards(ws)
    if not shards:
        raise RuntimeError(f"tokenizer: no corpus shards under {ws.stage_dir('corpus') / 'data'}")

    # 1. SentencePiece model, then the HF export (tokenizer.json + tokenizer.model + chat template).
    sp_model, training = build_model(recipe, folder, shards)
    hf_dir = export_hf(sp_model, folder / "hf", chat_template(cfg.chat_template))

    # 2. Evaluation on held-back documents: compression, round trip, SentencePiece vs HF ids (must be identical).
    held_back = [d["text"] for path in shards for d in iter_docs(path) if is_validation(d["id"], cfg.validation_fraction)]
    eval_texts = held_back or [d["text"] for d in iter_docs(shards[0])][:50]
    random.Random(cfg.seed).shuffle(eval_texts)
    tok = load_tokenizer(hf_dir)
    scores = evaluate(tok, eval_texts).summary()
    # Exact ties (equally scored segmentations, broken differently by the two libraries) are counted, not fatal.
    mismatched = scores["sp_hf_mismatches"]
    if mismatched:
        raise RuntimeError(f"tokenizer: HF export disagrees with SentencePiece on {mismatched}/{len(eval_texts)} texts, "
                           f"e.g. {scores['sp_hf_mismatch_examples']}")
    evaluation = {
        "vocab_size": tok.vocab_size,
        "eval_texts": len(eval_texts),
        "chars_per_token": scores["chars_per_token"],
        "bytes_per_token": scores["bytes_per_token"],
        "byte_fallback_rate": scores["byte_fallback_rate"],
        "unk_rate": scores["unk_rate"],
        "round_trip": f"{len(eval_texts) - scores['round_trip_failures']}/{len(eval_texts)}",
        "hf_id_mismatches": f"{mismatched}/{len(eval_texts)}",
        "hf_id_ties": scores["sp_hf_ties"],
        **training,
    }
    write_json_atomic(folder / "eval.json", evaluation)

    # 3. Packed token shards, one per corpus shard and split, encoded in a process pool.
    index = encode_corpus(sp_model, shards, folder / "tokens", cfg.validation_fraction, cfg.encode_workers)
    train_tokens = sum(s["tokens"] for s in index["shards"] if s["split"] == "train")
    val_tokens = sum(s["tokens"] for s in index["shards"] if s["split"] == "val")
    return StageResult(
        counts={**evaluation, "train_tokens": train_tokens, "val_tokens": val_tokens},
        outputs=["spm.model", "hf", "tokens", "eval.json"],
    )
