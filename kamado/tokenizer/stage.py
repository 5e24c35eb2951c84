"""The tokenizer stage: train SentencePiece on the kept corpus, export to HF, check ids, encode token shards."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import sentencepiece as spm
from tqdm import tqdm

from kamado.recipe import Recipe
from kamado.stage import StageResult, Workspace, write_json_atomic
from kamado.tokenizer.encode import token_dtype, write_token_shard
from kamado.tokenizer.export import export_hf, id_mismatches
from kamado.tokenizer.train import EOS, train_sentencepiece


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic hold-out by id hash: the same documents are held back on every rerun and every shard."""
    h = int(hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def corpus_shards(ws: Workspace) -> list[Path]:
    return sorted((ws.stage_dir("corpus") / "data").glob("shard-*.jsonl.gz"))


def iter_docs(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def run(recipe: Recipe, ws: Workspace) -> StageResult:
    cfg = recipe.tokenizer
    folder = ws.stage_dir("tokenizer")
    shards = corpus_shards(ws)
    if not shards:
        raise RuntimeError(f"tokenizer: no corpus shards under {ws.stage_dir('corpus') / 'data'}")

    # 1. Training text: one line per paragraph of the training documents (validation documents held back).
    train_txt = folder / "train.txt"
    held_back: list[str] = []
    rng = random.Random(cfg.seed)
    with open(train_txt, "w", encoding="utf-8") as out:
        for path in shards:
            for doc in iter_docs(path):
                if is_validation(doc["id"], cfg.validation_fraction):
                    held_back.append(doc["text"])
                    continue
                for line in doc["text"].split("\n"):
                    if line.strip():
                        out.write(line + "\n")
    sp_model = train_sentencepiece(cfg, train_txt, folder / "spm", num_threads=max(1, recipe.corpus.workers))
    train_txt.unlink()
    hf_dir = export_hf(sp_model, folder / "hf")
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))

    # 2. Evaluation on held-back text: compression, round trip, SentencePiece vs HF ids.
    eval_texts = held_back or [doc["text"] for doc in iter_docs(shards[0])][:50]
    rng.shuffle(eval_texts)
    ids = [sp.encode(t) for t in eval_texts]
    n_tokens = sum(len(x) for x in ids)
    n_chars = sum(len(t) for t in eval_texts)
    round_trip = sum(sp.decode(x) == t for x, t in zip(ids, eval_texts))
    checked, mismatched, examples = id_mismatches(sp_model, hf_dir, eval_texts)
    if mismatched:
        raise RuntimeError(f"tokenizer: HF export disagrees with SentencePiece on {mismatched}/{checked} texts, e.g. {examples}")
    evaluation = {
        "vocab_size": sp.get_piece_size(),
        "eval_texts": len(eval_texts),
        "chars_per_token": round(n_chars / max(n_tokens, 1), 4),
        "bytes_per_token": round(sum(len(t.encode('utf-8')) for t in eval_texts) / max(n_tokens, 1), 4),
        "byte_fallback_rate": round(sum(sp.id_to_piece(i).startswith("<0x") for x in ids for i in x) / max(n_tokens, 1), 6),
        "round_trip": f"{round_trip}/{len(eval_texts)}",
        "hf_id_mismatches": f"{mismatched}/{checked}",
    }
    write_json_atomic(folder / "eval.json", evaluation)

    # 3. Packed token shards, one per corpus shard and split.
    tokens_dir = folder / "tokens"
    tokens_dir.mkdir(exist_ok=True)
    dtype = token_dtype(sp.get_piece_size())
    index = {"dtype": dtype.name, "eos_id": EOS, "vocab_size": sp.get_piece_size(), "shards": []}
    for i, path in enumerate(tqdm(shards, desc="encode shards", unit="shard")):
        for split in ("train", "val"):
            want_val = split == "val"
            docs = (sp.encode(d["text"]) for d in iter_docs(path) if is_validation(d["id"], cfg.validation_fraction) == want_val)
            name = f"{split}-{i:05d}.bin"
            n_tok, n_docs = write_token_shard(tokens_dir / name, docs, EOS, dtype)
            index["shards"].append({"file": name, "split": split, "tokens": n_tok, "docs": n_docs})
    write_json_atomic(tokens_dir / "index.json", index)
    train_tokens = sum(s["tokens"] for s in index["shards"] if s["split"] == "train")
    val_tokens = sum(s["tokens"] for s in index["shards"] if s["split"] == "val")
    return StageResult(
        counts={**evaluation, "train_tokens": train_tokens, "val_tokens": val_tokens},
        outputs=["spm.model", "hf", "tokens", "eval.json"],
    )
