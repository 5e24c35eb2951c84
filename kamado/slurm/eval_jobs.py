"""`kamado eval RECIPE --executor slurm [--dry-run]`: evaluation as Slurm jobs.

One job array with a task per evaluation task (`kamado eval <recipe> --task-index I`, results in
`<out>/tasks/I/`), then one job, `afterok` on the whole array, that joins them in task order (`--merge`: results.json,
results.md, predictions/) and rewrites the evaluation section of the model folder's card (`<model>/README.md`,
when it is a card kamado wrote). A failed task cancels the merge (kill-on-invalid-dep): the card never shows a
partial table.

The Slurm side knows nothing about evaluation: the jobs are command lines built here, run by `run_command`, and go
through the executor's own planning, checks, dry run and jobs.json record (kamado.slurm.executor.submit_specs),
under the name "eval" (logs in `<workdir>/slurm/eval/`). The evaluation settings the jobs run with (the recipe's
eval section, or the --task/--shots/--limit/--fewshot given on the command line) are frozen at submit time in
`<workdir>/slurm/eval/eval-recipe.yaml`, so editing the recipe while the jobs wait changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kamado.recipe import Recipe, RecipeError

STAGE = "eval"  # the chain's name in jobs.json and its log folder


def run_command(argv: list[str]) -> str:
    """What a job runs: one command line; a non-zero exit fails the job (and so cancels its dependents)."""
    print(f"[kamado] running: {subprocess.list2cmdline(argv)}", flush=True)
    done = subprocess.run(argv)
    if done.returncode:
        raise RuntimeError(f"command exited with status {done.returncode}: {subprocess.list2cmdline(argv)}")
    return "done"


def command_specs(recipe: Recipe, partition: str, stage: str, array_commands: list[list[str]],
                  final_command: list[str]) -> list:
    """A job array (one task per command line) and one job after it, as the executor's JobSpecs."""
    from kamado.slurm.jobspec import JobSpec, array_params, base_params

    return [JobSpec(stage, "tasks", run_command, [(argv,) for argv in array_commands],
                    array_params(recipe, partition, stage, "tasks"), array=True),
            JobSpec(stage, "merge", run_command, [(final_command,)], base_params(recipe, partition, stage, "merge"))]


def eval_commands(recipe_yaml: Path, model: Path, out: Path, num_tasks: int, card: Path | None) -> tuple[list[list[str]], list[str]]:
    """(one `kamado eval --task-index I` per task, the `--merge` that joins them and rewrites the card)."""
    base = [sys.executable, "-u", "-m", "kamado.cli", "eval", str(recipe_yaml), "--model", str(model), "--out", str(out)]
    tasks = [base + ["--task-index", str(i)] for i in range(num_tasks)]
    return tasks, base + ["--merge"] + (["--card", str(card)] if card else [])


def kamado_card(model: Path) -> Path | None:
    from kamado.release.card import EVALUATION_HEADING

    card = model / "README.md"
    return card if card.is_file() and EVALUATION_HEADING in card.read_text(encoding="utf-8").split("\n") else None


def submit_eval(args, recipe: Recipe, model: Path, out: Path) -> int:
    """`recipe`: with its eval section as the command line left it (the jobs run exactly that)."""
    from kamado.recipe import load_recipe, to_yaml
    from kamado.durable import write_text_durable
    from kamado.slurm.chains import private_slurm_dir
    from kamado.slurm.executor import submit_specs

    for flag, given in (("--task-index", args.task_index is not None), ("--merge", args.merge),
                        ("--mt-bench", bool(args.mt_bench)), ("--card", bool(args.card))):
        if given:
            raise RecipeError(f"--executor slurm: {flag} cannot be combined with it (the jobs set their own --task-index, "
                              "--merge and --card)")
    if not recipe.eval.tasks:
        raise RecipeError("--executor slurm: no evaluation tasks (eval.tasks is empty and no --task given)")
    model, out = model.resolve(), out.resolve()
    frozen = private_slurm_dir(recipe.workdir) / STAGE / "eval-recipe.yaml"
    write_text_durable(frozen, to_yaml(recipe))
    card = kamado_card(model)
    tasks, merge = eval_commands(frozen, model, out, len(recipe.eval.tasks), card)
    print(f"[kamado] eval on Slurm: {len(tasks)} task(s) ({', '.join(t.name for t in recipe.eval.tasks)}) on {model}; "
          f"results in {out}; " + (f"then the evaluation table of {card} is rewritten" if card else
                                   f"no kamado model card in {model}: only results.json/md are written"))
    # the chain records and writes the recipe as loaded (recipe.resolved.yaml in the workdir is what `kamado slurm
    # status` judges the stages by), not the one with the command line's evaluation tasks
    as_loaded = load_recipe(args.recipe, args.overrides)
    as_loaded.workdir = recipe.workdir  # the CLI's --workdir, checked already

    def specs(partition: str, max_array_size: int) -> list:
        if len(tasks) > max_array_size:
            raise RecipeError(f"--executor slurm: {len(tasks)} evaluation tasks, but the cluster's MaxArraySize is "
                              f"{max_array_size}")
        return command_specs(as_loaded, partition, STAGE, tasks, merge)

    return submit_specs(as_loaded, [STAGE], specs,
                        dry_run=args.dry_run, force=args.force_submit,
                        dry_run_out=Path(recipe.workdir) / "slurm" / "dry-run-eval")
