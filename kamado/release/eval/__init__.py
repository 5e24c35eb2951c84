"""Evaluation of a released (or any HF) model: perplexity on held-back text, JCommonsenseQA and JNLI as
multiple choice by log-likelihood, JSQuAD by greedy generation with exact match and character F1.

`evaluate` returns one JSON-able dict; `format_table` turns it into the Markdown table of the model card.
Per-item predictions go to `<out_dir>/predictions/<task>-<k>shot.jsonl` so every number can be checked.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from kamado.recipe import EvalConfig, EvalTaskConfig
from kamado.release.eval.data import DEFAULT_TEMPLATES, EvalDataError, Item, read_items, read_texts, render
from kamado.release.eval.lm import LM
from kamado.release.eval.metrics import char_f1, exact_match

__all__ = ["evaluate", "format_table", "EvalDataError", "heldback_texts"]


def heldback_texts(tokens_dir: Path, tokenizer) -> list[str]:
    """The documents the tokenizer stage held back (its `val` token shards), decoded to text."""
    index_path = tokens_dir / "index.json"
    if not index_path.is_file():
        raise EvalDataError(f"perplexity: no held-back token shards ({index_path} missing); give eval.tasks[].path")
    index = json.loads(index_path.read_text())
    texts = []
    for shard in index["shards"]:
        if shard["split"] != "val":
            continue
        arr = np.fromfile(tokens_dir / shard["file"], dtype=index["dtype"]).astype(np.int64)
        ends = np.flatnonzero(arr == index["eos_id"])
        start = 0
        for end in ends:  # documents are separated by EOS
            if end > start:
                texts.append(tokenizer.decode(arr[start:end].tolist(), skip_special_tokens=True))
            start = end + 1
    if not texts:
        raise EvalDataError(f"perplexity: the tokenizer stage held back no documents in {tokens_dir}")
    return texts


def _shots(item: Item, pool: list[Item], k: int, seed: int) -> list[Item]:
    if k == 0:
        return []
    candidates = [p for p in pool if p.id != item.id]  # never the item itself
    if len(candidates) < k:
        raise EvalDataError(f"{k}-shot needs {k} other items, the few-shot pool has {len(candidates)}")
    return random.Random(f"{seed}:{item.id}").sample(candidates, k)


def _gold(item: Item) -> str:
    return item.choices[item.label] if item.choices else item.answers[0]


def _prompt(item: Item, shots: list[Item], template: str, task: str) -> str:
    parts = [render(template, s, task) + _gold(s) for s in shots]
    return "\n\n".join(parts + [render(template, item, task)])


def run_task(lm: LM, task: EvalTaskConfig, seed: int, texts: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Score one task; returns (summary, per-item records)."""
    if task.name == "perplexity":
        if texts is None:
            texts = [t for _, t in read_texts(Path(task.path))]
        texts = texts[: task.limit] if task.limit else texts
        return {"task": "perplexity", "data": task.path or "tokenizer held-back documents", **lm.perplexity(texts)}, []
    items = read_items(task.name, task.path)
    scored = items[: task.limit] if task.limit else items
    pool = read_items(task.name, task.fewshot_path) if task.fewshot_path else items
    template = task.template or DEFAULT_TEMPLATES[task.name]
    prompts = [_prompt(it, _shots(it, pool, task.shots, seed), template, task.name) for it in scored]
    summary = {"task": task.name, "data": task.path, "shots": task.shots, "limit": task.limit, "items": len(scored),
               "template": template}
    records = []
    if task.name in ("jcommonsenseqa", "jnli"):
        requests = [(p, c) for p, it in zip(prompts, scored) for c in it.choices]
        scores = iter(lm.loglikelihood(requests))
        correct = correct_norm = 0
        for it in scored:
            s = [next(scores) for _ in it.choices]
            lp = [x.logprob for x in s]
            norm = [x.logprob / len(c) for x, c in zip(s, it.choices)]  # per character: long choices are not penalised
            pred, pred_norm = int(np.argmax(lp)), int(np.argmax(norm))
            correct += pred == it.label
            correct_norm += pred_norm == it.label
            records.append({"id": it.id, "label": it.label, "pred": pred, "pred_norm": pred_norm,
                            "logprobs": [round(x, 4) for x in lp]})
        summary.update(accuracy=correct / len(scored), accuracy_norm=correct_norm / len(scored),
                       correct=correct, chance=1 / len(scored[0].choices))
    else:  # jsquad
        em = f1 = 0.0
        for prompt, it in zip(prompts, scored):
            pred = lm.generate(prompt, task.max_new_tokens).strip()
            e, f = exact_match(pred, it.answers), char_f1(pred, it.answers)
            em += e
            f1 += f
            records.append({"id": it.id, "prediction": pred, "answers": it.answers, "exact_match": e, "char_f1": round(f, 4)})
        summary.update(exact_match=em / len(scored), char_f1=f1 / len(scored))
    return summary, records


def evaluate(cfg: EvalConfig, model_dir: str | Path, tokens_dir: Path | None = None, out_dir: Path | None = None,
             lm: LM | None = None, log=print) -> dict:
    """Run every task of `cfg` on the model in `model_dir`; write results.json (+ predictions) to out_dir."""
    lm = lm or LM(model_dir, batch_size=cfg.batch_size, max_length=cfg.max_length)
    results = {"model": str(model_dir), "max_length": lm.max_length, "tasks": []}
    for task in cfg.tasks:
        t0 = time.time()
        texts = None
        if task.name == "perplexity" and not task.path:
            if tokens_dir is None:
                raise EvalDataError("perplexity: no data path given and no tokenizer stage to take held-back documents from")
            texts = heldback_texts(tokens_dir, lm.tok)
        summary, records = run_task(lm, task, cfg.seed, texts)
        summary["seconds"] = round(time.time() - t0, 2)
        results["tasks"].append(summary)
        log(f"[kamado] eval {_label(summary)}: {_headline(summary)}")
        if out_dir is not None and records:
            pred_dir = Path(out_dir) / "predictions"
            pred_dir.mkdir(parents=True, exist_ok=True)
            with open(pred_dir / f"{task.name}-{task.shots}shot.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
        (Path(out_dir) / "results.md").write_text(format_table(results) + "\n", encoding="utf-8")
    return results


def _label(s: dict) -> str:
    return s["task"] if s["task"] == "perplexity" else f"{s['task']} {s['shots']}-shot"


def _headline(s: dict) -> str:
    if s["task"] == "perplexity":
        return f"perplexity {s['perplexity']:.2f}, {s['bits_per_character']:.3f} bits/char on {s['tokens']:,} tokens"
    if "accuracy" in s:
        return f"accuracy {s['accuracy']:.4f} ({s['correct']}/{s['items']}), chance {s['chance']:.2f}"
    return f"exact match {s['exact_match']:.4f}, char F1 {s['char_f1']:.4f} on {s['items']} questions"


def format_table(results: dict) -> str:
    lines = ["| task | shots | items | metric | value |", "|---|---|---|---|---|"]
    for s in results["tasks"]:
        if s["task"] == "perplexity":
            lines.append(f"| perplexity ({s['data'] if s['data'].startswith('tokenizer') else Path(s['data']).name}) | – "
                         f"| {s['documents']:,} docs | perplexity / bits per char | {s['perplexity']:.2f} / {s['bits_per_character']:.3f} |")
        elif "accuracy" in s:
            lines.append(f"| {s['task']} | {s['shots']} | {s['items']:,} | accuracy (chance {s['chance']:.2f}) | "
                         f"{s['accuracy']:.4f} |")
        else:
            lines.append(f"| {s['task']} | {s['shots']} | {s['items']:,} | exact match / char F1 | "
                         f"{s['exact_match']:.4f} / {s['char_f1']:.4f} |")
    return "\n".join(lines)
