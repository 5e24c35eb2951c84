"""Evaluation of a released (or any HF) model: perplexity on held-back text; JCommonsenseQA, JNLI and JMMLU as
multiple choice by log-likelihood; JSQuAD and NIILC by greedy generation with exact match and character F1;
MGSM by chain-of-thought generation and number extraction; JHumanEval by pass@1 in a sandbox; JSTS by
correlation (tasks.py says how each is scored, formats.py how each is read).

`evaluate` returns one JSON-able dict; `format_table` turns it into the Markdown table of the model card.
Per-item predictions go to `<out_dir>/predictions/<task>-<k>shot.jsonl` so every number can be checked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kamado.eval.config import EvalConfig
from kamado.eval.data import EvalDataError
from kamado.eval.lm import LM
from kamado.eval.report import _headline, _label, format_table
from kamado.eval.tasks import _prompt, _shots, run_task  # noqa: F401  (_prompt, _shots: for tests)
from kamado.durable import write_text_durable

__all__ = ["evaluate", "format_table", "merge_results", "EvalDataError", "heldback_texts"]


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
            write_text_durable(Path(out_dir) / "predictions" / f"{task.name}-{task.shots}shot.jsonl",
                               "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if out_dir is not None:
        _write_results(Path(out_dir), results)
    return results


def _write_results(out_dir: Path, results: dict) -> None:
    write_text_durable(out_dir / "results.md", format_table(results) + "\n")
    write_text_durable(out_dir / "results.json", json.dumps(results, ensure_ascii=False, indent=2))  # last: "finished"


def merge_results(part_dirs: list[Path], out_dir: Path) -> dict:
    """One results.json/md and predictions/ from the folders of an evaluation split over tasks (a Slurm array:
    `kamado eval --task-index I` per array task, then `kamado eval --merge`), in task order."""
    parts = []
    for d in part_dirs:
        if not (d / "results.json").is_file():
            raise EvalDataError(f"{d}: no results.json: that evaluation task did not finish (rerun its --task-index)")
        parts.append(json.loads((d / "results.json").read_text(encoding="utf-8")))
    if not parts:
        raise EvalDataError(f"{out_dir}: no per-task results (tasks/*/results.json) to merge")
    results = {"model": parts[0]["model"], "max_length": parts[0]["max_length"], "tasks": [t for p in parts for t in p["tasks"]]}
    for d in part_dirs:
        for pred in sorted((d / "predictions").glob("*.jsonl")):
            write_text_durable(out_dir / "predictions" / pred.name, pred.read_text(encoding="utf-8"))
    _write_results(out_dir, results)
    return results


def split_or_merge(args, cfg, out: Path) -> tuple[Path, bool]:
    """`kamado eval --task-index I`: keep only task I and write to <out>/tasks/I (returns that folder, False);
    `kamado eval --merge`: join <out>/tasks/*/ into <out> (returns out, True: nothing else to run)."""
    if args.merge:
        # exactly the recipe's tasks: a folder left by an earlier, longer task list is not merged in
        parts = [out / "tasks" / str(i) for i in range(len(cfg.tasks))]
        results = merge_results(parts, out)
        print(format_table(results))
        if getattr(args, "card", None):  # the Slurm eval chain's last job: the model card's table follows the results
            from kamado.release.card import rewrite_evaluation

            print(f"[kamado] rewrote the evaluation section of {rewrite_evaluation(Path(args.card), results, note=_card_note(out))}")
        return out, True
    if not 0 <= args.task_index < len(cfg.tasks):
        raise EvalDataError(f"--task-index {args.task_index}: the recipe lists {len(cfg.tasks)} evaluation tasks (0..{len(cfg.tasks) - 1})")
    cfg.tasks = [cfg.tasks[args.task_index]]
    return out / "tasks" / str(args.task_index), False


def _card_note(out: Path) -> str:
    return (f"Evaluated after release by `kamado eval --executor slurm` (one Slurm array task per task, then merged); "
            f"results.json, results.md and per-item predictions in `{out}`.")
