"""Preemption and time limits on the real local cluster: a 2-node training job (one rank per node, gloo) is
stopped twice, checkpoints, is requeued and resumes; its per-step losses equal an uninterrupted local 2-rank
run's (this also is the "2-node job = local 2 ranks" check).

Stop 1 is what Slurm does near the time limit (`--signal=USR1@…`: SIGUSR1 to every task), sent with
`scancel --signal=USR1` while the ranks are still importing torch: the signal is kept until the training loop
listens, then the loop checkpoints and the job requeues itself. Stop 2 is `scontrol requeue` in the middle of
training (what preemption does too): SIGTERM to every task, Slurm requeues the job. Each restart waits
cred_expire=10 s (tests/slurm_cluster.py).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kamado.cli import main
from kamado.recipe import load_recipe
from kamado.slurm.jobs import requeue_decision
from kamado.local import run_stages
from kamado.stage import Workspace
from tests.slurm.test_executor import wait_until_done, write_recipe

STEPS = 120  # long enough to be still running at both stops, short enough to keep the test under a minute


def test_requeue_decision():
    assert requeue_decision("signal", "RUNNING", 0, 3) == "requeue"  # time-limit warning: requeue ourselves
    assert requeue_decision("signal", "RUNNING", 3, 3) == "fail"  # bounded by slurm.max_requeues
    assert requeue_decision("signal", "COMPLETING", 0, 3) == "slurm"  # scontrol requeue / preemption / scancel
    assert requeue_decision("signal", "COMPLETING", 9, 3) == "slurm"
    assert requeue_decision("nonfinite", "RUNNING", 0, 3) == "fail"
    assert requeue_decision(None, "RUNNING", 0, 3) == "fail"


def _losses(ws: Workspace) -> list[tuple[int, float]]:
    rows = (ws.stage_dir("pretrain") / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, rows) if "loss" in r]


def _steps_logged(ws: Workspace) -> int:
    path = ws.stage_dir("pretrain") / "metrics.jsonl"
    return max((s for s, _ in _losses(ws)), default=0) if path.is_file() else 0


def _wait(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(t.split("=", 1) for t in out.split() if "=" in t)


@pytest.mark.distributed
def test_training_job_checkpoints_requeues_and_resumes_with_the_same_losses(slurm_cluster, tmp_path):
    path = write_recipe(tmp_path, 200)
    sets = [f"pretrain.max_steps={STEPS}", "pretrain.checkpoint_every=1000", "slurm.max_requeues=2"]
    local = load_recipe(path, ["workdir=run-local", "pretrain.nodes=1", "pretrain.nproc_per_node=2", *sets])
    run_stages(local, ["corpus", "tokenizer"], log=lambda s: None)
    slurm_recipe = load_recipe(path, sets)
    ws = Workspace(slurm_recipe)
    for stage in ("corpus", "tokenizer"):  # same configs: the DONE markers hold in the Slurm workdir too
        shutil.copytree(Workspace(local).stage_dir(stage), ws.stage_dir(stage))
    args = ["pretrain", str(path), "--executor", "slurm"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    job_id = json.loads((ws.root / "slurm" / "jobs.json").read_text())["stages"]["pretrain"][0]["id"]

    # The uninterrupted reference runs meanwhile: the Slurm job spends most of its time waiting to restart.
    reference = threading.Thread(target=run_stages, args=(local, ["pretrain"]), kwargs={"log": lambda s: None})
    reference.start()
    try:
        def started(n_ranks: int, restart: int) -> bool:
            logs = "".join(p.read_text() for p in (ws.root / "slurm" / "pretrain").glob("*_log.out"))
            return logs.count("started on") >= n_ranks and f"(restart {restart})" in logs

        _wait(lambda: started(2, 0), "both ranks to start")
        assert not (ws.stage_dir("pretrain") / "metrics.jsonl").exists()  # still importing: no loop yet
        assert subprocess.run(["scancel", "--signal=USR1", job_id]).returncode == 0
        _wait(lambda: _job(job_id).get("Restarts") == "1", "the job to requeue itself after SIGUSR1", timeout=240)
        first_stop = json.loads((ws.stage_dir("pretrain") / "STOPPED.json").read_text())
        assert first_stop in ({"reason": "signal", "signal": s, "step": 1} for s in ("SIGUSR1", "peer"))  # the loop's first step: it got the early signal

        _wait(lambda: _steps_logged(ws) >= first_stop["step"] + 5, "the requeued job to train on", timeout=240)
        assert subprocess.run(["scontrol", "requeue", job_id]).returncode == 0  # SIGTERM, as on preemption
        _wait(lambda: _job(job_id).get("Restarts") == "2", "Slurm to requeue the job")
        _wait(lambda: (ws.stage_dir("pretrain") / "STOPPED.json").is_file(), "the checkpoint after SIGTERM", timeout=15)
        second_stop = json.loads((ws.stage_dir("pretrain") / "STOPPED.json").read_text())
        assert second_stop["reason"] == "signal" and first_stop["step"] < second_stop["step"] < STEPS
        wait_until_done(slurm_recipe, "pretrain", timeout=300)
    except BaseException:
        subprocess.run(["scancel", job_id])  # leave the cluster idle for the next test
        raise
    finally:
        reference.join()

    # Each restart resumed from the checkpoint saved on the signal (checkpoint_every is out of reach).
    log = "".join(p.read_text() for p in (ws.root / "slurm" / "pretrain").glob("*_log.out"))
    resumed = [int(s) for s in re.findall(r"pretrain: resumed from \S+ at step (\d+)", log)]
    assert resumed == [first_stop["step"], second_stop["step"]], log[-3000:]
    assert "requeued job" in log  # stop 1: the job requeued itself (stop 2: Slurm did; its log line is best effort,
    # as Slurm SIGKILLs the ranks KillWait=5 s after SIGTERM)
    # The rank still importing torch got the signal early and passed it on; under load the other rank may already
    # have built its loop (its handler then took the signal directly). Both stopped at step 1 either way (above).
    assert 1 <= log.count("SIGUSR1 came before the training loop started") <= 2

    expected = _losses(Workspace(local))
    assert len(expected) == STEPS
    assert _losses(ws) == expected  # every step once, the same losses as the uninterrupted run
    assert ws.read_done("pretrain")["counts"]["last_loss"] == Workspace(local).read_done("pretrain")["counts"]["last_loss"]
    assert _job(job_id).get("JobState") == "COMPLETED"


def test_requeued_shard_task_skips_the_shards_it_had_done(slurm_cluster, tmp_path):
    """Phase array tasks are submitit Checkpointables: the time-limit signal (USR2, sent at once here) requeues
    the corpus filter task, and the restarted task skips every shard that has its done-marker."""
    path = write_recipe(tmp_path, 1200, extra="  max_array_tasks: 1\n")  # one task does shards 0, 1, 2, 3 in turn
    recipe = load_recipe(path)
    ws = Workspace(recipe)
    assert main(["corpus", str(path), "--executor", "slurm"]) == 0
    array_id = json.loads((ws.root / "slurm" / "jobs.json").read_text())["stages"]["corpus"][0]["id"]
    first = ws.stage_dir("corpus") / "work" / "filtered-00000.done.json"
    try:
        _wait(first.is_file, "shard 0 to finish")
        assert not (ws.stage_dir("corpus") / "work" / "filtered-00003.done.json").exists()  # still running
        done_before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.parent.glob("filtered-*")
                       if not p.name.endswith(".tmp")}
        assert subprocess.run(["scancel", "--signal=USR2", array_id]).returncode == 0
        wait_until_done(recipe, "corpus")
    except BaseException:
        subprocess.run(["scancel", array_id])
        raise
    assert _job(array_id).get("Restarts") == "1"
    assert "Caught signal SIGUSR2" in "".join(p.read_text() for p in (ws.root / "slurm" / "corpus").glob("*_log.err"))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.parent.glob("filtered-*")}
    assert {k: after[k] for k in done_before} == done_before  # what was done before the requeue is untouched
    assert len([n for n in after if n.endswith(".done.json")]) == 4
