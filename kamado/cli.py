"""`kamado run | corpus | tokenizer | pretrain | sft | dpo | release | show | slurm ...`"""

from __future__ import annotations

import argparse
import json
import sys

from kamado.pipeline import current
from kamado.recipe import RecipeError, check_inputs, load_recipe, load_recipe_for_cli

def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set pretrain.lr=3e-4 (repeatable)")
    p.add_argument("--workdir", help="run folder (default: the recipe's workdir)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local", help="where stages run (default: local)")
    p.add_argument("--dry-run", action="store_true", help="with --executor slurm: write and print the sbatch scripts and a submit.sh that submits them, instead of submitting")
    p.add_argument("--fresh", action="append", default=[], choices=current().names, metavar="STAGE",
                   help="start this stage from nothing: its folder (checkpoints included) is moved aside to "
                        "<stage>.superseded-<time>/ first (repeatable). Without it a changed config moves the folder "
                        "aside too, while a raised max_steps resumes from the newest checkpoint")
    p.add_argument("--force-submit", action="store_true", help="with --executor slurm: submit even while jobs of an earlier submission for the same workdir are queued (jobs.json keeps both chains)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kamado",
        description="kamado (竈): raw Japanese text in, a documented Hugging Face checkpoint out.\n\nstages: "
        + " → ".join(current().names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every unfinished stage of a recipe (skips stages already done)")
    _recipe_args(run)
    run.add_argument("--only", action="append", choices=current().names, help="run only this stage (repeatable)")
    run.add_argument("--until", choices=current().names, help="stop after this stage")
    for spec in current().stages:
        p = sub.add_parser(spec.name, help=spec.help)
        _recipe_args(p)
    show = sub.add_parser("show", help="print the resolved recipe and each stage's state")
    show.add_argument("recipe")
    show.add_argument("--set", dest="overrides", action="append", default=[])
    show.add_argument("--workdir")
    clean = sub.add_parser("clean", help="delete the stage folders moved aside (<stage>.superseded-<time>/) in a recipe's workdir")
    clean.add_argument("recipe")
    clean.add_argument("--set", dest="overrides", action="append", default=[])
    clean.add_argument("--workdir")
    clean.add_argument("--yes", action="store_true", help="delete them (without it: only list them)")
    slurm = sub.add_parser("slurm", help="Slurm helpers: status / cancel of a recipe's jobs")
    slurm.add_argument("action", choices=("status", "cancel"))
    slurm.add_argument("recipe")
    slurm.add_argument("--workdir")
    _eval_plan_args(sub)
    return parser


def _eval_plan_args(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model: perplexity, JCommonsenseQA, JNLI, JSQuAD, JMMLU, MGSM, JHumanEval, "
                                     "NIILC, JSTS (+ contamination report)")
    ev.add_argument("recipe", help="recipe YAML file (its eval section; its workdir for the corpus and held-back text)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--workdir")
    ev.add_argument("--model", help="HF model folder (default: the release, else the last training stage's hf/)")
    ev.add_argument("--task", action="append", default=[], metavar="NAME=PATH",
                    help="evaluate this task instead of eval.tasks (repeatable), e.g. jcommonsenseqa=valid.json")
    ev.add_argument("--shots", type=int, default=0, help="few-shot examples for --task tasks (default 0)")
    ev.add_argument("--limit", type=int, help="score only the first N items of each --task task")
    ev.add_argument("--fewshot", action="append", default=[], metavar="NAME=PATH",
                    help="take task NAME's shots from PATH (e.g. mgsm=mgsm-ja-fewshot.tsv with worked solutions)")
    ev.add_argument("--max-new-tokens", type=int, help="generation tasks: tokens generated per item")
    ev.add_argument("--mt-bench", metavar="QUESTIONS", help="answer FastChat-format MT-Bench questions (question.jsonl); "
                    "answers go to <out>/mt_bench/model_answer/<model-id>.jsonl (alone unless --task is given too)")
    ev.add_argument("--judge", metavar="DIR", help="with --mt-bench: grade the answers with this local model folder")
    ev.add_argument("--model-id", help="with --mt-bench: the model_id in the answer files (default: the model folder's name)")
    ev.add_argument("--task-index", type=int, metavar="I", help="run only task I of the list (one Slurm array task); "
                    "results go to <out>/tasks/I/, joined by --merge")
    ev.add_argument("--merge", action="store_true", help="join <out>/tasks/0..N-1/ (from --task-index runs) into <out>/results.json")
    ev.add_argument("--card", metavar="README", help="with --merge: rewrite this model card's evaluation section from the merged results")
    ev.add_argument("--executor", choices=("local", "slurm"), default="local", help="slurm: one job array task per "
                    "evaluation task, then a merge job (afterok) that also rewrites the release's model card")
    ev.add_argument("--dry-run", action="store_true", help="with --executor slurm: write the sbatch scripts and submit.sh only")
    ev.add_argument("--force-submit", action="store_true", help="with --executor slurm: submit even while earlier jobs are queued")
    ev.add_argument("--harness", choices=("kamado", "lm-eval"), default="kamado",
                    help="lm-eval: run lm-evaluation-harness tasks (--task LM_EVAL_TASK=LOCAL_JSONL) offline instead")
    ev.add_argument("--out", help="folder for results.json, results.md, predictions/ (default: <workdir>/eval)")
    pl = sub.add_parser("plan", help="compute budget → Chinchilla-optimal parameters and tokens, closest preset")
    pl.add_argument("--gpus", type=int, required=True)
    pl.add_argument("--gpu", required=True, help="accelerator: h100, h200, a100, b200, l40s, v100, mi300x, ...")
    pl.add_argument("--days", type=float, required=True)
    pl.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
    pl.add_argument("--recipe", help="recipe whose vocabulary, model and corpus (in its workdir) to check")
    pl.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")


_load = load_recipe_for_cli  # the recipe with --set and --workdir applied (kamado/recipe.py)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["tokenizer", "eval"]:  # `kamado tokenizer eval ...` compares tokenizers; `kamado tokenizer RECIPE` runs the stage
        from kamado.tokenizer.evaluate import main as tokenizer_eval

        return tokenizer_eval(argv[2:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "show":
            return _show(_load(args))
        if args.command == "clean":
            return _clean(_load(args), args.yes)
        if args.command == "plan":
            return _plan(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "slurm":
            from kamado.slurm.status import cancel, status

            recipe = load_recipe(args.recipe)
            if args.workdir:
                import os

                recipe.workdir = os.path.abspath(args.workdir)
            return status(recipe) if args.action == "status" else cancel(recipe)
        recipe = _load(args)
        from kamado.local import run_stages, select_stages

        if args.command == "run":
            stages = select_stages(recipe, args.only, args.until)
        else:
            stages = select_stages(recipe, [args.command])
        check_inputs(recipe, stages, args.recipe)
        if args.executor == "slurm":
            from kamado.slurm.executor import submit
            from kamado.local import start_fresh
            from kamado.stage import Workspace

            Workspace(recipe).preflight(stages, args.fresh)
            if not args.dry_run and args.fresh:
                # --fresh moves folders aside: never under a chain that is still queued and may be writing them
                from kamado.slurm.chains import refuse_if_queued

                if not args.force_submit:
                    refuse_if_queued(recipe.workdir, force=False)
                start_fresh(recipe, args.fresh)
            return submit(recipe, stages, dry_run=args.dry_run, force=args.force_submit)
        run_stages(recipe, stages, fresh=args.fresh)
        if "release" in stages:
            _print_release(recipe)
        return 0
    except RecipeError as exc:
        print(f"kamado: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a failed stage: say which, leave no DONE behind (the stage never wrote one)
        print(f"kamado: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _show(recipe) -> int:
    from kamado.recipe import to_yaml
    from kamado.stage import Workspace

    print(to_yaml(recipe))
    ws = Workspace(recipe)
    for stage in recipe.stages:
        print(f"{stage:<10} {_state(ws, stage)}")
    aside = ws.superseded()
    if aside:
        print("\nsuperseded folders (kept when a changed config redid the stage; `kamado clean` deletes them):")
        for path, info in aside:
            print(f"  {path.name:<40} {_size(path):>10}  {'; '.join(info.get('changes', []))}")
    return 0


def _state(ws, stage: str) -> str:
    from kamado.stage import is_marked

    folder = ws.stage_dir(stage)
    if not folder.exists():
        return "pending"
    if not is_marked(folder):
        return "blocked: a folder kamado did not create has this stage's name"
    done = ws.read_done(stage)
    trained = ws.trained_steps(stage)
    if trained is not None and done.get("fingerprint") == ws.fingerprint(stage):
        want = ws.recipe.stage_config(stage).max_steps
        if trained < want:
            return f"extend: trained {trained} of {want} steps (resumes from its newest checkpoint)"
        if trained > want:
            return f"refused: trained {trained} steps, max_steps is {want} (raise it, or run --fresh {stage})"
    if ws.is_done(stage):
        return "done"
    return "changed: will be redone (the folder is moved aside)" if done else "started"


def _size(path) -> str:
    total = float(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()))
    for unit in ("B", "KiB", "MiB"):
        if total < 1024:
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GiB"


def _clean(recipe, yes: bool) -> int:
    """Delete superseded stage folders: only those kamado moved aside (SUPERSEDED.json inside)."""
    import shutil

    from kamado.stage import Workspace

    aside = Workspace(recipe).superseded()
    if not aside:
        print(f"[kamado] no superseded folders in {recipe.workdir}")
    for path, _info in aside:
        print(f"[kamado] {'deleting' if yes else 'would delete'} {path} ({_size(path)})")
        if yes:
            shutil.rmtree(path)
    if aside and not yes:
        print("[kamado] run again with --yes to delete them")
    return 0


def _plan(args) -> int:
    from kamado.plan import format_plan, make_plan, plan_dict

    recipe = load_recipe(args.recipe, args.overrides) if args.recipe else None
    try:
        plan = make_plan(args.gpus, args.gpu, args.days, args.mfu, recipe)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    print(json.dumps(plan_dict(plan), indent=2) if args.json else format_plan(plan))
    return 0


def _eval(args) -> int:
    import os
    from pathlib import Path

    from kamado.eval.config import EvalTaskConfig

    from kamado.recipe import check_eval_inputs
    from kamado.eval.contamination import contamination, format_contamination, task_items, training_sources
    from kamado.eval.report import format_table
    from kamado.eval.run import evaluate
    from kamado.stage import Workspace

    recipe = _load(args)
    cfg = recipe.eval
    if args.harness == "lm-eval":
        if args.executor == "slurm":
            raise RecipeError("--executor slurm runs kamado's own scorer only, not --harness lm-eval")
        from kamado.eval.harness import lm_eval_command

        return lm_eval_command(args, recipe)
    if args.task:
        cfg.tasks = []
        for spec in args.task:
            name, _, path = spec.partition("=")
            cfg.tasks.append(EvalTaskConfig(name=name, path=os.path.abspath(path) if path else None, shots=args.shots, limit=args.limit))
    fewshot = dict(spec.partition("=")[::2] for spec in args.fewshot)
    for task in cfg.tasks:
        if task.name in fewshot:
            task.fewshot_path = os.path.abspath(fewshot[task.name])
        if args.max_new_tokens:
            task.max_new_tokens = args.max_new_tokens
    if args.task:
        from kamado.recipe import validate_section

        validate_section(recipe, "eval", "--task")
    check_eval_inputs(cfg, args.recipe)
    ws = Workspace(recipe)
    model = Path(args.model) if args.model else ws.stage_dir("release") / recipe.release.model_name
    if not args.model and not (model / "config.json").is_file():
        from kamado.release.stage import source_stage

        model = ws.stage_dir(source_stage(recipe)) / "hf"
    if not (model / "config.json").is_file():
        raise RecipeError(f"--model: no HF model (config.json) in {model}")
    out = Path(args.out) if args.out else ws.root / "eval"
    if args.executor == "slurm":
        from kamado.slurm.eval_jobs import submit_eval

        return submit_eval(args, recipe, model, out)
    if args.task_index is not None or args.merge:
        from kamado.eval.run import split_or_merge

        out, done = split_or_merge(args, cfg, out)
        if done:
            return 0
    if args.mt_bench:
        from kamado.eval.mtbench import mt_bench_command

        mt_bench_command(args, cfg, model, out)
        if not args.task:
            return 0
    results = evaluate(cfg, model, tokens_dir=ws.stage_dir("tokenizer") / "tokens", out_dir=out)
    print(format_table(results))
    items = task_items(cfg.tasks)
    sources = training_sources(recipe, ws)  # the corpus and the SFT/reward/DPO/PPO data
    if items and sources:
        report = contamination(items, sources, cfg.contamination_ngram)
        (out / "contamination.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        print(format_contamination(report))
    print(f"[kamado] results in {out}")
    return 0


def _print_release(recipe) -> None:
    """End of the demo: load the released model the way a user would (offline) and print a Japanese sample."""
    from kamado.stage import Workspace

    ws = Workspace(recipe)
    verification = json.loads((ws.stage_dir("release") / "verification.json").read_text())
    out = ws.stage_dir("release") / recipe.release.model_name
    print(f"\n[kamado] released {out}")
    diff = verification.get("max_abs_logit_diff")
    if diff is None:  # released from an earlier checkpoint: only the export itself could be compared
        print(f"[kamado] logits vs consolidated checkpoint: max |diff| {verification['max_abs_logit_diff_vs_consolidated']:.3g}")
    else:
        print(f"[kamado] logits vs training model: max |diff| {diff:.3g}")
    for s in verification["samples"]:
        print(f"[kamado] 「{s['prompt']}」→「{s['completion']}」")


if __name__ == "__main__":
    raise SystemExit(main())
