"""`kamado eval --executor slurm`: a job array over the evaluation tasks, then a merge job (afterok) that writes
results.json/md and predictions and rewrites the release's model card table; the same numbers as a local run."""
from __future__ import annotations

import json
import pickle
import subprocess
import time
from pathlib import Path

import pytest

from kamado.cli import main
from kamado.slurm.status import stage_status
from kamado.stage import Workspace
from tests.helpers import ROOT

SAMPLE = ROOT / "examples" / "data" / "eval"
STAGES = "stages=[corpus,tokenizer,pretrain,release]"
TASKS = ["--task", "perplexity", "--task", f"jcommonsenseqa={SAMPLE / 'jcommonsenseqa-sample.jsonl'}", "--limit", "6"]


@pytest.fixture(scope="module")
def release(tok_recipe, random_model_dir, tmp_path_factory):
    """A released random tiny model (no training): the release stage on the conftest's random model, card included."""
    from kamado.local import run_stages
    from tests.release.conftest import make_untrained_release_recipe

    recipe = make_untrained_release_recipe(tok_recipe, random_model_dir, tmp_path_factory.mktemp("evalslurm"))
    run_stages(recipe, ["release"], log=lambda _: None)
    return recipe


def cli(recipe, *args: str) -> list[str]:
    return ["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", str(recipe.workdir), "--set", STAGES,
            "--set", "slurm.partition=debug", "--set", "slurm.time_minutes=10", *TASKS, *args]


def model_dir(recipe) -> Path:
    return Workspace(recipe).stage_dir("release") / recipe.release.model_name


def test_dry_run_writes_an_array_over_the_tasks_and_a_merge_job(release, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(Path(release.workdir) / "no-such-slurm.conf"))  # no cluster: checks skipped
    assert main(cli(release, "--executor", "slurm", "--dry-run")) == 0
    folder = Path(release.workdir) / "slurm" / "dry-run-eval"
    assert sorted(p.name for p in folder.glob("*.sbatch")) == ["01-eval-tasks.sbatch", "02-eval-merge.sbatch"]
    assert "#SBATCH --array=0-1%" in (folder / "01-eval-tasks.sbatch").read_text()
    assert "--dependency=afterok:$j1" in (folder / "submit.sh").read_text()
    calls = [pickle.loads((folder / "01-eval-tasks" / f"{i}.pkl").read_bytes()) for i in (0, 1)]
    merge = pickle.loads((folder / "02-eval-merge" / "0.pkl").read_bytes())
    task_argvs = [c.args[0] for c in calls]
    assert [a[a.index("--task-index") + 1] for a in task_argvs] == ["0", "1"]
    assert "--merge" in merge.args[0] and merge.args[0][merge.args[0].index("--card") + 1] == str(model_dir(release) / "README.md")
    frozen = Path(task_argvs[0][task_argvs[0].index("eval") + 1])  # the evaluation settings the jobs run with
    from kamado.recipe import load_recipe

    assert [(t.name, t.limit) for t in load_recipe(frozen).eval.tasks] == [("perplexity", 6), ("jcommonsenseqa", 6)]
    assert not (Path(release.workdir) / "slurm" / "jobs.json").exists()  # nothing submitted
    assert "nothing submitted" in capsys.readouterr().out


def test_eval_array_on_slurm_equals_local_eval_and_rewrites_the_card(slurm_cluster, release, tmp_path, capsys):
    out = tmp_path / "slurm-eval"
    assert main(cli(release, "--executor", "slurm", "--out", str(out))) == 0
    record = json.loads((Path(release.workdir) / "slurm" / "jobs.json").read_text())["stages"]["eval"]
    assert [(e["role"], e.get("tasks")) for e in record] == [("tasks", 2), ("merge", None)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = stage_status(release).get("eval", {})
        if info.get("state") in ("DONE", "FAILED"):
            break
        time.sleep(1)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((Path(release.workdir) / "slurm" / "eval").glob("*.err")))
    assert info.get("state") == "DONE", (info, logs)

    local = tmp_path / "local-eval"
    assert main(cli(release, "--out", str(local))) == 0

    def without_timings(path: Path) -> dict:
        results = json.loads(path.read_text())
        return {**results, "tasks": [{k: v for k, v in t.items() if k != "seconds"} for t in results["tasks"]]}

    merged = without_timings(out / "results.json")
    assert [t["task"] for t in merged["tasks"]] == ["perplexity", "jcommonsenseqa"]
    assert merged == without_timings(local / "results.json")
    assert (out / "predictions" / "jcommonsenseqa-0shot.jsonl").read_text() == \
        (local / "predictions" / "jcommonsenseqa-0shot.jsonl").read_text()
    card = (model_dir(release) / "README.md").read_text()
    section = card[card.index("## Evaluation / 評価"):card.index("## Verification / 検証")]
    assert "| jcommonsenseqa | 0 | 6 |" in section and "kamado eval --executor slurm" in section
    assert card.index("## Model / モデル") < card.index("## Evaluation / 評価")  # the rest of the card stays
    capsys.readouterr()
    assert main(["slurm", "status", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", str(release.workdir)]) == 0
    assert any(line.split()[:2] == ["eval", "DONE"] for line in capsys.readouterr().out.splitlines())
    squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert squeue == []
