"""Exact resume on CPU, DeepSpeed ZeRO-2, 2 ranks: a run stopped by SIGUSR1 mid-way and run again gives the
same per-step losses, bit for bit, as a straight run; and the stop leaves no DONE behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from kamado.local import run_stages

from kamado.stage import Workspace
from tests.helpers import ROOT, tiny_recipe

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
# log_every=5: metrics reach metrics.jsonl at log steps (the loop reads the device back only there)
STEPS = ["pretrain.max_steps=60", "pretrain.checkpoint_every=1000", "pretrain.log_every=5", "pretrain.warmup_steps=5"]


def losses(ws: Workspace) -> list[float]:
    rows = [json.loads(x) for x in (ws.stage_dir("pretrain") / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def cli(workdir, *extra):
    args = [sys.executable, "-m", "kamado.cli", "run", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--only", "pretrain",
            "--set", f"workdir={workdir}", *[x for s in STEPS for x in ("--set", s)], *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_signal_checkpoint_and_bit_exact_resume(tmp_path):
    straight = tiny_recipe(tmp_path, *STEPS, workdir="a")
    run_stages(straight, ["corpus", "tokenizer", "pretrain"], lambda s: None)
    expected = losses(Workspace(straight))
    assert len(expected) == 60

    # same corpus and tokenizer (copied with their DONE markers, so pretrain's fingerprint is the same)
    for stage in ("corpus", "tokenizer"):
        shutil.copytree(tmp_path / "a" / stage, tmp_path / "b" / stage)
    ws = Workspace(tiny_recipe(tmp_path, *STEPS, workdir="b"))
    proc = cli(tmp_path / "b")
    metrics = ws.stage_dir("pretrain") / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    pids = subprocess.run(["pgrep", "-f", f"kamado.train.pretrain {tmp_path / 'b'}"], capture_output=True, text=True).stdout.split()
    assert pids, "no training rank found to signal"
    os.kill(int(pids[-1]), signal.SIGUSR1)  # one rank only: the ranks agree through an all-reduce
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, out
    assert "stopped (signal)" in out
    stopped = json.loads((ws.stage_dir("pretrain") / "STOPPED.json").read_text())
    stopped_at = stopped["step"]
    assert 5 <= stopped_at < 60
    # the signal rank 0 got itself, or "peer" when only the other rank was signalled
    assert stopped["reason"] == "signal" and stopped["signal"] in ("SIGUSR1", "peer")
    assert not (ws.stage_dir("pretrain") / "DONE.json").exists()
    assert (ws.stage_dir("pretrain") / "checkpoints" / f"step{stopped_at:07d}").is_dir()

    proc = cli(tmp_path / "b")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resumed from" in out and f"at step {stopped_at}" in out
    assert losses(ws) == expected  # bit for bit
    assert ws.is_done("pretrain")
