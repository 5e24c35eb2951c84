"""Scoring one task: prompts built from a template and few-shot examples, then one of five ways of reading the
model's answer (multiple choice, extractive/open QA, math, code, similarity). Every way batches several items
per forward pass (LM.loglikelihood and LM.generate_batch)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from kamado.eval.config import EvalTaskConfig
from kamado.eval.data import EvalDataError, Item, default_template, read_items, read_texts, render
from kamado.eval.formats import METHODS
from kamado.eval.lm import LM
from kamado.eval.metrics import char_f1, exact_match, extract_number, pearson, same_number, spearman
from kamado.eval.sandbox import network_isolation, run_program

CHOICE_TASKS = ("jcommonsenseqa", "jnli", "jmmlu")
QA_TASKS = ("jsquad", "niilc")
# HumanEval's stop sequences: a completion ends where a new top-level statement would begin
CODE_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MATH_STOP = ("\n\n", "問題：")


def _shots(item: Item, pool: list[Item], k: int, seed: int) -> list[Item]:
    if k == 0:
        return []
    candidates = [p for p in pool if p.id != item.id]  # never the item itself
    subject = item.fields.get("subject")
    if subject is not None:  # JMMLU: shots from the same subject, as MMLU's dev-set convention
        candidates = [p for p in candidates if p.fields.get("subject") == subject]
    if len(candidates) < k:
        raise EvalDataError(f"{k}-shot needs {k} other items{f' of subject {subject}' if subject else ''}, "
                            f"the few-shot pool has {len(candidates)}")
    return random.Random(f"{seed}:{item.id}").sample(candidates, k)


def _gold(item: Item) -> str:
    """What follows a shot's prompt: its worked solution, score, correct choice or first answer."""
    if "solution" in item.fields:
        return item.fields["solution"]
    if item.target is not None:
        return f"{item.target:.1f}"
    return item.choices[item.label] if item.choices else item.answers[0]


def _prompt(item: Item, shots: list[Item], template: str, task: str) -> str:
    parts = [render(template, s, task) + _gold(s) for s in shots]
    return "\n\n".join(parts + [render(template, item, task)])


def _fewshot_source(task: EvalTaskConfig) -> str:
    if task.shots == 0:
        return "none (zero-shot)"
    where = task.fewshot_path or f"the evaluated file itself ({task.path})"
    return f"{task.shots} items drawn from {where} with seed-fixed sampling per item, never the item itself"


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
    template = task.template or default_template(task.name)
    prompts = [_prompt(it, _shots(it, pool, task.shots, seed), template, task.name) for it in scored]
    summary = {"task": task.name, "data": task.path, "shots": task.shots, "limit": task.limit, "items": len(scored),
               "template": template, "fewshot_source": _fewshot_source(task), "method": METHODS[task.name]}
    if task.name in CHOICE_TASKS:
        records = _score_choice(lm, prompts, scored, summary)
    elif task.name in QA_TASKS:
        records = _score_qa(lm, prompts, scored, summary, task.max_new_tokens)
    elif task.name == "mgsm":
        records = _score_math(lm, prompts, scored, summary, task.max_new_tokens)
    elif task.name == "jhumaneval":
        records = _score_code(lm, prompts, scored, summary, task)
    elif task.name == "jsts":
        records = _score_similarity(lm, prompts, scored, summary)
    else:
        raise EvalDataError(f"unknown task {task.name!r}")
    return summary, records


def _score_choice(lm: LM, prompts: list[str], items: list[Item], summary: dict) -> list[dict]:
    requests = [(p, c) for p, it in zip(prompts, items) for c in it.choices]
    scores = iter(lm.loglikelihood(requests))
    records = []
    correct = correct_norm = 0
    for it in items:
        s = [next(scores) for _ in it.choices]
        lp = [x.logprob for x in s]
        norm = [x.logprob / len(c) for x, c in zip(s, it.choices)]  # per character: long choices are not penalised
        pred, pred_norm = int(np.argmax(lp)), int(np.argmax(norm))
        correct += pred == it.label
        correct_norm += pred_norm == it.label
        rec = {"id": it.id, "label": it.label, "pred": pred, "pred_norm": pred_norm, "logprobs": [round(x, 4) for x in lp]}
        if "subject" in it.fields:
            rec["subject"] = it.fields["subject"]
        records.append(rec)
    summary.update(accuracy=correct / len(items), accuracy_norm=correct_norm / len(items),
                   correct=correct, chance=1 / len(items[0].choices))
    if "subject" in items[0].fields:  # JMMLU reports the mean over subjects too, as MMLU does
        by_subject: dict[str, list[bool]] = {}
        for r in records:
            by_subject.setdefault(r["subject"], []).append(r["pred"] == r["label"])
        summary["subjects"] = {s: round(sum(v) / len(v), 4) for s, v in sorted(by_subject.items())}
        summary["accuracy_macro"] = sum(summary["subjects"].values()) / len(by_subject)
    return records


def _score_qa(lm: LM, prompts: list[str], items: list[Item], summary: dict, max_new_tokens: int) -> list[dict]:
    records = []
    em = f1 = 0.0
    for pred, it in zip(lm.generate_batch(prompts, max_new_tokens, ["\n"]), items):
        pred = pred.strip()
        e, f = exact_match(pred, it.answers), char_f1(pred, it.answers)
        em += e
        f1 += f
        records.append({"id": it.id, "prediction": pred, "answers": it.answers, "exact_match": e, "char_f1": round(f, 4)})
    summary.update(exact_match=em / len(items), char_f1=f1 / len(items))
    return records


def _score_math(lm: LM, prompts: list[str], items: list[Item], summary: dict, max_new_tokens: int) -> list[dict]:
    records = []
    correct = 0
    for text, it in zip(lm.generate_batch(prompts, max_new_tokens, list(MATH_STOP)), items):
        number = extract_number(text)
        ok = same_number(number, it.answers[0])
        correct += ok
        records.append({"id": it.id, "generation": text.strip(), "extracted": number, "answer": it.answers[0], "correct": ok})
    summary.update(accuracy=correct / len(items), correct=correct, chance=0.0)
    return records


def _score_code(lm: LM, prompts: list[str], items: list[Item], summary: dict, task: EvalTaskConfig) -> list[dict]:
    records = []
    passed = 0
    for completion, it in zip(lm.generate_batch(prompts, task.max_new_tokens, list(CODE_STOP)), items):
        f = it.fields
        program = f"{f['prompt']}{completion}\n\n{f['test']}\n\ncheck({f['entry_point']})\n"
        result = run_program(program, timeout=task.timeout_s, memory_mb=task.memory_mb)
        passed += result.passed
        records.append({"id": it.id, "completion": completion, "status": result.status, "detail": result.detail})
    summary.update(pass_at_1=passed / len(items), passed=passed,
                   sandbox={"timeout_s": task.timeout_s, "memory_mb": task.memory_mb,
                            "network": "namespace (" + " ".join(network_isolation()) + ") + socket guard"
                            if network_isolation() else "socket guard only (no network namespace here)"})
    return records


def _score_similarity(lm: LM, prompts: list[str], items: list[Item], summary: dict) -> list[dict]:
    requests = [(p, c) for p in prompts for c in items[0].choices]
    scores = iter(lm.loglikelihood(requests))
    values = np.arange(len(items[0].choices), dtype=np.float64)
    records, preds, golds = [], [], []
    for it in items:
        lp = np.array([next(scores).logprob for _ in it.choices])
        p = np.exp(lp - lp.max())
        pred = float((p / p.sum() * values).sum())
        preds.append(pred)
        golds.append(float(it.target))
        records.append({"id": it.id, "label": it.target, "pred": round(pred, 4)})
    summary.update(pearson=pearson(preds, golds), spearman=spearman(preds, golds))
    return records
