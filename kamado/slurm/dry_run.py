"""`--dry-run`: the planned jobs written out as sbatch scripts, their pickled calls and a `submit.sh` that submits
them in order (see `write_dry_run`), printed too; nothing is submitted and no cluster is needed."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import kamado
from kamado.recipe import Recipe
from kamado.slurm.jobspec import JobSpec, job_entry, log_folder


def render(spec: JobSpec, folder: Path, dependency: str | None = None, calls: Path | None = None) -> str:
    """The sbatch script of this job as submitit would write it (kamado.slurm.script). With `calls` (a dry run),
    the script first puts its pickled call (`calls/<array task or 0>.pkl`) where submitit's runner looks for it,
    `<folder>/<job id>_submitted.pkl`; a requeued job keeps the one there, which may hold a checkpoint."""
    from kamado.slurm.script import sbatch_script

    params = dict(spec.params)
    if dependency:
        params["dependency"] = dependency
    if calls is not None:
        f, c = shlex.quote(str(folder)), shlex.quote(str(calls))
        params["setup"] = [
            "# kamado dry run: this job's pickled call, where submitit's runner looks for it (kept on a requeue)",
            'if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then kamado_id=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}; '
            f'kamado_call={c}/${{SLURM_ARRAY_TASK_ID}}.pkl; else kamado_id=$SLURM_JOB_ID; kamado_call={c}/0.pkl; fi',
            f'[ -e {f}/"${{kamado_id}}_submitted.pkl" ] || cp "$kamado_call" {f}/"${{kamado_id}}_submitted.pkl"',
            *params.get("setup", []),
        ]
    command = shlex.join([sys.executable, "-u", "-m", "kamado.slurm.run_job", str(folder)])
    return sbatch_script(command, folder, params, len(spec.args) if spec.array else None)


def dry_run_folder(recipe: Recipe) -> Path:
    return Path(recipe.workdir) / "slurm" / "dry-run"


def write_dry_run(recipe: Recipe, specs: list[JobSpec], todo: list[str], out: Path) -> Path:
    """Everything needed to submit the planned jobs by hand, in `out` (emptied first); returns `out/submit.sh`.

    - `NN-<stage>-<role>.sbatch`: the job scripts, without dependencies (submit.sh passes them);
    - `NN-<stage>-<role>/<task>.pkl`: the call each job (array task) runs, pickled by submitit as a real
      submission would, which the script copies to where submitit's runner reads it;
    - `recipe.resolved.yaml`: the recipe the jobs run with (training ranks read it from the workdir);
    - `plan.json`: the jobs.json entries of the planned jobs, without their ids;
    - `submit.sh [--force-submit]`: the same checks as `kamado run --executor slurm` (a private <workdir>/slurm; no
      job of an earlier chain still queued, unless --force-submit), under the same lock, then `sbatch --parsable`
      of each script in order, each `--dependency=afterok:` on the one before; on a failed submission it cancels
      what it submitted; at the end it appends the chain to `<workdir>/slurm/jobs.json` (kamado.slurm.chains),
      so `kamado slurm status` follows it. Every path and value in it is shell-quoted."""
    from submitit.core.utils import DelayedSubmission

    from kamado.recipe import to_yaml

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "recipe.resolved.yaml").write_text(to_yaml(recipe), encoding="utf-8")
    workdir = Path(recipe.workdir).resolve()
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    code_root = Path(kamado.__file__).resolve().parents[1]
    plan_json = {"stages": todo, "jobs": [{"stage": spec.stage, "entry": job_entry(spec)} for spec in specs]}
    (out / "plan.json").write_text(json.dumps(plan_json, indent=2), encoding="utf-8")
    lines = ["#!/bin/bash",
             f"# kamado dry run of recipe {q(recipe.name)}: {len(specs)} job(s) for {', '.join(todo)}, each after the one "
             "before (afterok)",
             "# usage: bash submit.sh [--force-submit]  (--force-submit: even while jobs of an earlier chain are queued)",
             "set -euo pipefail",
             f"workdir={q(workdir)}",
             f"export PYTHONPATH={q(code_root)}${{PYTHONPATH:+:$PYTHONPATH}}",
             f'kamado_chains() {{ {q(sys.executable)} -m kamado.slurm.chains "$@"; }}',
             'force=; if [ "${1:-}" = --force-submit ]; then force=--force; fi',
             'kamado_chains prepare "$workdir"  # <workdir>/slurm: 0700, refused when others can write into it',
             'if command -v flock >/dev/null; then exec 9>>"$workdir/slurm/submit.lock"; flock 9; fi  # one submitter at a time',
             'replaces=$(kamado_chains check "$workdir" ${force:+"$force"})  # refused while an earlier chain is queued',
             "submitted=()",
             "undo() {  # no half chain: what this script submitted goes",
             '  if [ ${#submitted[@]} -gt 0 ]; then scancel "${submitted[@]}"; '
             'echo "[kamado] submission failed; cancelled ${submitted[*]}" >&2; fi',
             "}",
             "trap undo ERR",
             f"mkdir -p {' '.join(q(workdir / 'slurm' / st) for st in dict.fromkeys(sp.stage for sp in specs))}",
             f"cp {q(out / 'recipe.resolved.yaml')} {q(workdir / 'recipe.resolved.yaml')}"]
    for i, spec in enumerate(specs, 1):
        name = f"{i:02d}-{spec.stage}-{spec.role}"
        calls = out / name
        calls.mkdir()
        for task, args in enumerate(spec.args):
            delayed = DelayedSubmission(spec.fn, *args)
            delayed.set_timeout(recipe.slurm.time_minutes, recipe.slurm.max_requeues)  # as submitit's executor does
            delayed.dump(calls / f"{task}.pkl")
        script = out / f"{name}.sbatch"
        script.write_text(render(spec, log_folder(recipe, spec.stage).resolve(), None, calls.resolve()), encoding="utf-8")
        dep = f" --dependency=afterok:$j{i - 1}" if i > 1 else ""
        # stage and role are identifiers (plan() checks them: letters, digits, _ . -); the job ids are digits
        lines += [f"j{i}=$(sbatch --parsable{dep} {q(script.resolve())}); j{i}=${{j{i}%%;*}}; submitted+=(\"$j{i}\")",
                  f'echo "[kamado] {spec.stage}: submitted {spec.role} job $j{i}' + (f' (array of {len(spec.args)})' if spec.array else '')
                  + (f', after $j{i - 1}"' if i > 1 else '"')]
    ids = " ".join(f'"$j{i}"' for i in range(1, len(specs) + 1))
    lines += [f'KAMADO_REPLACES="$replaces" kamado_chains record "$workdir" {q(out / "plan.json")} {ids}',
              f"printf '%s\\n' {q('[kamado] logs: ' + str(workdir / 'slurm') + '; follow with: kamado slurm status RECIPE')}"]
    submit_sh = out / "submit.sh"
    submit_sh.write_text("\n".join(lines) + "\n", encoding="utf-8")
    submit_sh.chmod(0o700)
    return submit_sh


def print_dry_run(recipe: Recipe, specs: list[JobSpec], todo: list[str], out: Path) -> None:
    """Write the dry run to `out` and print each script and submit.sh, each under a line naming the job."""
    submit_sh = write_dry_run(recipe, specs, todo, out)
    for i, spec in enumerate(specs, 1):
        script = submit_sh.parent / f"{i:02d}-{spec.stage}-{spec.role}.sbatch"
        print(f"# ---- {script}: {spec.stage} / {spec.role}" + (f", job array of {len(spec.args)} tasks" if spec.array else ""))
        print(script.read_text(encoding="utf-8"))
    print(f"# ---- {submit_sh}: submits them in order, each after the one before (afterok)")
    print(submit_sh.read_text(encoding="utf-8"))
    print(f"[kamado] dry run: {len(specs)} job(s) for {', '.join(todo)}; nothing submitted; "
          f"submit them with: bash {shlex.quote(str(submit_sh))}")
