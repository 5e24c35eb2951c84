"""Shared plumbing for the training benchmarks (train_throughput, train_memory, train_gpu_mfu).

Nothing here trains: it builds the demo's token shards with the real tokenizer stage, starts torchrun, and
reads the rates back. The benchmarks themselves say what they compare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY_RECIPE = ROOT / "recipes" / "tiny-cpu.yaml"


def bench_env(**extra: str) -> dict[str, str]:
    """The environment kamado's launcher gives its ranks (OMP_NUM_THREADS=1 and friends), forced rather than
    defaulted so both sides of a comparison get the same threads whatever the caller's shell has."""
    from kamado.train.launch import worker_env

    env = worker_env()
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def kamado_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kamado.cli", *args]


def run(cmd: list[str], env: dict[str, str] | None = None, quiet: bool = True, log: Path | None = None) -> None:
    """Run a command; on failure show its output (kept in `log` when given) and stop the benchmark."""
    out = open(log, "w") if log else subprocess.PIPE
    try:
        proc = subprocess.run(cmd, env=env or bench_env(), stdout=out if quiet else None, stderr=subprocess.STDOUT if quiet else None,
                              text=True, cwd=ROOT)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        text = log.read_text() if log else (proc.stdout or "")
        sys.exit(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{text[-4000:]}")


def build_tiny_tokens(workdir: Path) -> Path:
    """The demo's corpus and tokenizer stages into `workdir` (skipped when already done): packed token shards
    of the committed Japanese sample, vocab 3000. Returns the workdir."""
    run(kamado_cmd("run", str(TINY_RECIPE), "--until", "tokenizer", "--set", f"workdir={workdir}"))
    if not (workdir / "tokenizer" / "tokens" / "index.json").is_file():
        sys.exit(f"{workdir}/tokenizer/tokens/index.json was not written")
    return workdir


def torchrun_cmd(nproc: int, script: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script), *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steady_rate(rows: list[dict], warmup: int) -> tuple[float, int]:
    """Tokens per second over the steps after `warmup`: tokens of steps warmup+1..N over the wall time from the
    end of step `warmup` to the end of step N (each row: step, tokens, time at the end of the step)."""
    rows = sorted((r for r in rows if "tokens" in r), key=lambda r: r["step"])
    warmup = max(warmup, 1)  # the first timed step needs the end time of the step before it
    if len(rows) <= warmup + 1:
        raise ValueError(f"only {len(rows)} steps recorded; need more than warmup={warmup} + 1")
    timed = rows[warmup:]
    return sum(r["tokens"] for r in timed) / (timed[-1]["time"] - rows[warmup - 1]["time"]), len(timed)
