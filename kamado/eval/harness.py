"""`kamado eval --harness lm-eval`: lm-evaluation-harness (the optional `lm_eval` package, 0.4.x) run offline
against a model folder, each task's data read from local files, so scores compare with public leaderboards that
use lm-eval (the Open Japanese LLM Leaderboard's `ja_leaderboard_*` tasks, for one).

`--task NAME=PATH`: NAME is a registered lm-eval task (e.g. `ja_leaderboard_jcommonsenseqa`) or a task YAML file;
PATH is a local JSON Lines file in the layout of the task's Hugging Face dataset (one row per line, the same field
names and label encoding). It replaces the task's evaluation split; `--fewshot NAME=PATH` replaces its few-shot
split (default: the same file; lm-eval never takes a shot equal to the item from the same split). No network: the
dataset is loaded with the `json` builder and HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set.

Outputs: `<out>/lm-eval/results.json` (lm-eval's results and configs) and per-item
`<out>/lm-eval/predictions/<task>.jsonl` (log-likelihood tasks: each choice's log-probability and the argmax).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kamado.durable import write_json_durable, write_text_durable
from kamado.eval.data import DEFAULT_TEMPLATES, EvalDataError


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise EvalDataError("--harness lm-eval needs the lm_eval package: pip install 'kamado[eval]' "
                            "(or pip install lm-eval==0.4.13)") from None


def jcommonsenseqa_task_yaml(task_name: str) -> str:
    """kamado's own JCommonsenseQA prompt (eval/data.DEFAULT_TEMPLATES) as an lm-eval task YAML: with the same prompt on both
    sides, lm-eval's per-item choices can be held against kamado's scorer (tests/eval/test_harness.py) and timed
    against it (benchmarks/eval_speed.py)."""
    prompt = DEFAULT_TEMPLATES["jcommonsenseqa"].replace("{question}", "{{question}}").replace("\n", "\\n")
    return (f"task: {task_name}\ndataset_path: json\nvalidation_split: validation\noutput_type: multiple_choice\n"
            f'doc_to_text: "{prompt}"\n'
            'doc_to_choice: "{{[choice0, choice1, choice2, choice3, choice4]}}"\n'
            'doc_to_target: label\ntarget_delimiter: ""\nmetric_list:\n  - metric: acc\n')


def build_task(manager, name: str, path: str, fewshot_path: str | None = None):
    """An lm-eval Task whose evaluation (and few-shot) split comes from local files."""
    entry = manager.task_index.get(name)
    if entry is None:
        if name.endswith((".yaml", ".yml")) and Path(name).is_file():
            from lm_eval.tasks._index import TaskIndex

            entry = TaskIndex.entry_from_path(Path(name))
        if entry is None:
            raise EvalDataError(f"--harness lm-eval: {name!r} is neither an lm-eval task nor a task YAML file")
    base = manager._factory._load_full_config(entry, None)
    split = base.get("test_split") or base.get("validation_split")
    if not split:
        raise EvalDataError(f"lm-eval task {name} has no test or validation split to replace with {path}")
    files = {split: str(path)}
    shot_split = base.get("fewshot_split") or base.get("training_split")
    if shot_split and shot_split != split:
        files[shot_split] = str(fewshot_path or path)
    overrides = {"task": base["task"], "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    return manager._factory.build(entry, overrides=overrides, registry=manager.task_index)


def _prediction(sample: dict) -> dict:
    rec = {"doc_id": sample["doc_id"], "target": sample.get("target")}
    resps = sample.get("filtered_resps") or []
    if resps and isinstance(resps[0], (list, tuple)) and len(resps[0]) == 2:  # log-likelihood: (logprob, is_greedy)
        lp = [float(r[0]) for r in resps]
        rec.update(logprobs=[round(x, 4) for x in lp], pred=max(range(len(lp)), key=lp.__getitem__))
    else:
        rec["response"] = resps
    return rec


def run_lm_eval(model_dir: Path, tasks: list, out_dir: Path, batch_size: int = 8, device: str | None = None,
                shots: int | None = None, limit: int | None = None, log=print, lm=None) -> dict:
    """Run each (name, path, fewshot_path) through lm-eval; returns lm-eval's results dict (JSON-able part)."""
    _require_lm_eval()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    built = [build_task(manager, name, path, fewshot) for name, path, fewshot in tasks]
    if lm is None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # add_bos_token: kamado models are trained with BOS first (lm-eval adds none by default for Llama)
        lm = HFLM(pretrained=str(model_dir), device=device, batch_size=batch_size, add_bos_token=True,
                  dtype="bfloat16" if device.startswith("cuda") else "float32")
    t0 = time.time()
    result = simple_evaluate(model=lm, tasks=built, num_fewshot=shots, limit=limit, log_samples=True,
                             task_manager=manager, random_seed=1234, numpy_random_seed=1234, torch_random_seed=1234,
                             fewshot_random_seed=1234)
    seconds = round(time.time() - t0, 2)
    out = Path(out_dir) / "lm-eval"
    for task, samples in result.get("samples", {}).items():
        write_text_durable(out / "predictions" / f"{task}.jsonl",
                           "".join(json.dumps(_prediction(s), ensure_ascii=False) + "\n" for s in samples))
    summary = {"harness": "lm-eval", "model": str(model_dir), "seconds": seconds, "results": result["results"],
               "n-shot": result.get("n-shot"), "configs": result.get("configs"),
               "data": {name: {"eval": str(path), "fewshot": str(fewshot or path)} for name, path, fewshot in tasks}}
    write_json_durable(out / "results.json", json.loads(json.dumps(summary, default=str)))
    for task, res in result["results"].items():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in res.items() if isinstance(v, float) and "stderr" not in k)
        log(f"[kamado] lm-eval {task}: {metrics}")
    return summary


def lm_eval_command(args, recipe) -> int:
    """`kamado eval RECIPE --harness lm-eval --task NAME=PATH [--fewshot NAME=PATH] [--shots K] [--limit N]`."""
    from kamado.stage import Workspace

    if not args.task:
        raise EvalDataError("--harness lm-eval needs at least one --task LM_EVAL_TASK=LOCAL_FILE")
    ws = Workspace(recipe)
    model = Path(args.model) if args.model else ws.stage_dir("release") / recipe.release.model_name
    if not (model / "config.json").is_file():
        raise EvalDataError(f"--model: no HF model (config.json) in {model}")
    fewshot = dict(spec.partition("=")[::2] for spec in args.fewshot)
    tasks = []
    for spec in args.task:
        name, _, path = spec.partition("=")
        if not path or not Path(path).is_file():
            raise EvalDataError(f"--task {spec}: give NAME=PATH with an existing local file (no downloads)")
        tasks.append((name, os.path.abspath(path), os.path.abspath(fewshot[name]) if name in fewshot else None))
    out = Path(args.out) if args.out else ws.root / "eval"
    shots = args.shots if args.shots else None  # None: each task's own num_fewshot (the leaderboard's setting)
    run_lm_eval(model, tasks, out, batch_size=recipe.eval.batch_size, shots=shots, limit=args.limit)
    print(f"[kamado] lm-eval results in {out / 'lm-eval'}")
    return 0
