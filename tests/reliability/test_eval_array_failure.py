"""A failed evaluation task on Slurm: the merge job never runs (afterok + kill-on-invalid-dep), so no results.json
appears and the release's model card keeps its table; `kamado slurm status` says FAILED."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kamado.cli import main
from kamado.slurm.status import stage_status
from tests.slurm.test_eval_array import STAGES, model_dir, release  # noqa: F401  (release: the fixture)
from tests.helpers import ROOT


def test_a_failed_task_cancels_the_merge_and_leaves_the_card(slurm_cluster, release, tmp_path):  # noqa: F811
    bad = tmp_path / "jcqa-bad.jsonl"  # exists (submit-time check passes) but its second line is no JSON
    bad.write_text((ROOT / "examples/data/eval/jcommonsenseqa-sample.jsonl").read_text().splitlines()[0] + "\n{oops\n")
    card_before = (model_dir(release) / "README.md").read_text()
    out = tmp_path / "eval"
    assert main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", str(release.workdir), "--set", STAGES,
                 "--set", "slurm.partition=debug", "--set", "slurm.time_minutes=10", "--task", "perplexity",
                 "--task", f"jcommonsenseqa={bad}", "--executor", "slurm", "--out", str(out)]) == 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        info = stage_status(release)["eval"]
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if info["state"] == "FAILED" and not queued:
            break
        time.sleep(1)
    assert info["state"] == "FAILED" and not queued, (info, queued)
    merge = next(j for j in info["jobs"] if j["role"] == "merge")
    assert merge["states"] in (["CANCELLED"], ["GONE"]), merge  # never ran: cancelled as its dependency failed
    assert (out / "tasks" / "0" / "results.json").is_file()  # the good task finished
    assert not (out / "results.json").exists()
    assert (model_dir(release) / "README.md").read_text() == card_before
    errors = "".join(p.read_text() for p in (Path(release.workdir) / "slurm" / "eval").glob("*.err"))
    assert "jcqa-bad.jsonl" in errors  # the task's log names the bad file
