"""`kamado run | corpus | tokenizer | pretrain | sft | dpo | release | show | slurm ...`"""

from __future__ import annotations

import argparse
import json
import sys

from kamado.recipe import STAGES, RecipeError, check_inputs, load_recipe

STAGE_HELP = {
    "corpus": "read, normalize, filter, mask PII and deduplicate raw Japanese text",
    "tokenizer": "train a SentencePiece tokenizer, export it to HF, encode packed token shards",
    "pretrain": "pretrain a Llama-style model with DeepSpeed ZeRO",
    "sft": "instruction fine-tuning (loss on responses only)",
    "dpo": "preference optimisation (DPO) against a frozen reference",
    "release": "export a verified Hugging Face checkpoint with a model card",
}


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set pretrain.lr=3e-4 (repeatable)")
    p.add_argument("--workdir", help="run folder (default: the recipe's workdir)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local", help="where stages run (default: local)")
    p.add_argument("--dry-run", action="store_true", help="with --executor slurm: print the sbatch scripts instead of submitting")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kamado",
        description="kamado (竈): raw Japanese text in, a documented Hugging Face checkpoint out.\n\nstages: "
        + " → ".join(STAGES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every unfinished stage of a recipe (skips stages already done)")
    _recipe_args(run)
    run.add_argument("--only", action="append", choices=STAGES, help="run only this stage (repeatable)")
    run.add_argument("--until", choices=STAGES, help="stop after this stage")
    for stage in STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage])
        _recipe_args(p)
    show = sub.add_parser("show", help="print the resolved recipe and each stage's state")
    show.add_argument("recipe")
    show.add_argument("--set", dest="overrides", action="append", default=[])
    show.add_argument("--workdir")
    slurm = sub.add_parser("slurm", help="Slurm helpers: status / cancel of a recipe's jobs")
    slurm.add_argument("action", choices=("status", "cancel"))
    slurm.add_argument("recipe")
    slurm.add_argument("--workdir")
    return parser


def _load(args) -> object:
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "workdir", None):
        import os

        recipe.workdir = os.path.abspath(args.workdir)
    return recipe


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "show":
            return _show(_load(args))
        if args.command == "slurm":
            from kamado.slurm.executor import cancel, status

            recipe = load_recipe(args.recipe)
            if args.workdir:
                import os

                recipe.workdir = os.path.abspath(args.workdir)
            return status(recipe) if args.action == "status" else cancel(recipe)
        recipe = _load(args)
        from kamado.stage import run_stages, select_stages

        if args.command == "run":
            stages = select_stages(recipe, args.only, args.until)
        else:
            stages = select_stages(recipe, [args.command])
        check_inputs(recipe, stages, args.recipe)
        if args.executor == "slurm":
            from kamado.slurm.executor import submit

            return submit(recipe, stages, dry_run=args.dry_run)
        run_stages(recipe, stages)
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
        state = "done" if ws.is_done(stage) else ("started" if ws.stage_dir(stage).exists() else "pending")
        print(f"{stage:<10} {state}")
    return 0


def _print_release(recipe) -> None:
    """End of the demo: load the released model the way a user would (offline) and print a Japanese sample."""
    from kamado.stage import Workspace

    ws = Workspace(recipe)
    verification = json.loads((ws.stage_dir("release") / "verification.json").read_text())
    out = ws.stage_dir("release") / recipe.release.model_name
    print(f"\n[kamado] released {out}")
    print(f"[kamado] logits vs training model: max |diff| {verification['max_abs_logit_diff']:.3g}")
    for s in verification["samples"]:
        print(f"[kamado] 「{s['prompt']}」→「{s['completion']}」")


if __name__ == "__main__":
    raise SystemExit(main())
