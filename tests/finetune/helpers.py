"""Helpers for the fine-tuning stage tests: copies of the session's demo run (`tiny_run`), metrics rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kamado.local import run_stages

from kamado.stage import Workspace
from tests.helpers import tiny_recipe

# the overrides the session's `tiny_run` was made with: a recipe with the same ones finds those stages done
TINY_RUN_OVERRIDES = ["pretrain.max_steps=40", "pretrain.checkpoint_every=20", "pretrain.log_every=10", "sft.max_steps=16",
                      "dpo.max_steps=10"]


def copy_stages(tiny_run, dst: Path, stages=("corpus", "tokenizer", "pretrain", "sft")) -> Path:
    """The demo run's finished `stages` (DONE markers included, checkpoints left out) copied into `dst`."""
    src = Workspace(tiny_run).root
    for stage in stages:
        shutil.copytree(src / stage, dst / stage, ignore=shutil.ignore_patterns("checkpoints"))
    return dst


def run_from_demo(tiny_run, base: Path, name: str, stages: list[str], *overrides: str, copy=("corpus", "tokenizer", "pretrain", "sft")):
    """Run `stages` in `base/name`, a copy of the demo run's `copy` stages, with `overrides`; returns the Workspace."""
    copy_stages(tiny_run, base / name, copy)
    recipe = tiny_recipe(base, *TINY_RUN_OVERRIDES, *overrides, workdir=name)
    assert run_stages(recipe, stages, lambda s: None) == {s: "done" for s in stages}
    return Workspace(recipe)


def metric_rows(ws: Workspace, stage: str) -> list[dict]:
    """metrics.jsonl's per-step rows (those with a training loss)."""
    rows = [json.loads(line) for line in (ws.stage_dir(stage) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("loss") is not None]
