"""A stage added in a pipeline spec of its own (tests/toy_pipeline.py) runs through the CLI, locally and on the
Slurm test cluster, with no edit anywhere in kamado/: the recipe gets its section, the CLI its sub-command, the
executors its phase (a process pool here, a job array there) and its finish."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

PIPELINE = "tests.toy_pipeline:PIPELINE"


def _kamado(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAMADO_PIPELINE": PIPELINE, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "kamado.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _args(workdir) -> list[str]:
    return [str(ROOT / "recipes" / "tiny-cpu.yaml"), "--set", f"workdir={workdir}", "--set", "stages=[corpus,wordcount]",
            "--set", "wordcount.word=した", "--set", "corpus.num_shards=3"]


def _expected(workdir) -> dict:
    docs = hits = 0
    for shard in sorted((workdir / "corpus" / "data").glob("shard-*.jsonl.gz")):
        for line in gzip.open(shard, "rt", encoding="utf-8"):
            docs += 1
            hits += json.loads(line)["text"].count("した")
    return {"docs": docs, "hits": hits}


def _check(workdir) -> dict:
    total = json.loads((workdir / "wordcount" / "total.json").read_text())
    done = json.loads((workdir / "wordcount" / "DONE.json").read_text())
    assert {k: total[k] for k in ("docs", "hits")} == _expected(workdir) and total["docs"] > 0 and total["hits"] > 0
    assert done["counts"]["docs"] == total["docs"] and done["outputs"] == ["total.json"]
    assert done["config"] == {"word": "した", "workers": 2}
    return total


def test_toy_stage_runs_locally_from_its_own_pipeline_spec(tmp_path):
    help_text = _kamado("--help").stdout
    assert "wordcount" in help_text and "count a word in the corpus" in help_text
    out = _kamado("run", *_args(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    total = _check(tmp_path / "run")
    assert total["shards"] == 3 and total["tasks"] == 3
    again = _kamado("run", *_args(tmp_path / "run"))  # done: skipped, like any stage
    assert again.returncode == 0 and "wordcount: done already" in again.stdout
    plain = subprocess.run([sys.executable, "-m", "kamado.cli", "run", *_args(tmp_path / "plain")], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items()
                                                                             if k != "KAMADO_PIPELINE"})
    assert plain.returncode == 2 and "wordcount" in plain.stderr  # kamado's own pipeline has no such stage


def test_toy_stage_runs_on_slurm_as_a_job_array(slurm_cluster, tmp_path):
    workdir = tmp_path / "run"
    out = _kamado("run", *_args(workdir), "--executor", "slurm")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "wordcount: submitted count job" in out.stdout, out.stdout
    deadline = time.time() + 300
    while time.time() < deadline and not (workdir / "wordcount" / "DONE.json").is_file():
        time.sleep(2)
    assert (workdir / "wordcount" / "DONE.json").is_file(), _kamado("slurm", "status", *_args(workdir)[:1],
                                                                     "--workdir", str(workdir)).stdout
    total = _check(workdir)
    assert total["tasks"] == 3  # one array task per corpus shard
    records = sorted(p.name for p in (workdir / "wordcount" / "phases").glob("count-*.json"))
    assert records == ["count-00000.json", "count-00001.json", "count-00002.json"]
    assert all(json.loads(p.read_text())["job"] for p in (workdir / "wordcount" / "phases").glob("count-*.json"))
