"""The stage contract: workspace folders, done-markers with a config fingerprint, skip / resume / redo.

A stage is `run(recipe, ws) -> StageResult` writing only into `<workdir>/<stage>/`. It is done when
`<stage>/DONE.json` exists and its fingerprint matches: a hash of the stage's own config and of the
done-markers of the stage before it. Redoing a stage therefore changes the fingerprint of every stage after
it, and they are redone too; stages before it are untouched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kamado.recipe import STAGES, Recipe, to_dict, to_yaml

DONE = "DONE.json"
STARTED = "STARTED.json"


@dataclass
class StageResult:
    counts: dict[str, Any] = field(default_factory=dict)  # whatever the stage measured (docs, tokens, losses)
    outputs: list[str] = field(default_factory=list)  # paths relative to the stage folder


class Workspace:
    """The run folder: one sub-folder per stage plus the resolved recipe."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.root = Path(recipe.workdir)

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def previous(self, stage: str) -> str | None:
        """The stage before this one in the recipe's list (its input)."""
        stages = self.recipe.stages
        i = stages.index(stage)
        return stages[i - 1] if i > 0 else None

    def model_source(self, stage: str) -> Path:
        """The HF folder of the last training stage before `stage` (what it continues from)."""
        stages = self.recipe.stages
        from kamado.recipe import POLICY_STAGES  # not the reward stage: its scalar-head model is no policy

        for prev in reversed(stages[: stages.index(stage)]):
            if prev in POLICY_STAGES:
                return self.stage_dir(prev) / "hf"
        raise RuntimeError(f"stage {stage} needs a trained model, but no training stage comes before it")

    def tokenizer_dir(self) -> Path:
        return self.stage_dir("tokenizer") / "hf"

    # ------------------------------------------------------------ markers
    def read_done(self, stage: str) -> dict | None:
        path = self.stage_dir(stage) / DONE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def fingerprint(self, stage: str) -> str:
        cfg = to_dict(self.recipe.stage_config(stage))
        prev = self.previous(stage)
        upstream = self.read_done(prev) if prev else None
        # A previous stage that is not done has no fingerprint yet; whoever asks must run it first.
        upstream_key = {"stage": prev, "fingerprint": upstream.get("fingerprint"), "finished_at": upstream.get("finished_at")} if upstream else None
        blob = json.dumps({"stage": stage, "config": cfg, "upstream": upstream_key}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def is_done(self, stage: str) -> bool:
        done = self.read_done(stage)
        return done is not None and done.get("fingerprint") == self.fingerprint(stage)

    def require_previous(self, stage: str) -> None:
        prev = self.previous(stage)
        if prev and not self.is_done(prev):
            raise RuntimeError(f"stage {stage} needs stage {prev} to be done first (run it, or drop --only)")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the workdir: Slurm array tasks of one stage prepare its folder at the same time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".prepare.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def prepare(self, stage: str) -> Path:
        """Make the stage folder ready: keep it to resume if it was started with the same fingerprint, else wipe.

        Safe to call from several processes at once: the first one wipes a stale folder, the others find
        STARTED.json with their fingerprint and keep what the first (and each other) already wrote."""
        folder = self.stage_dir(stage)
        fp = self.fingerprint(stage)
        started = folder / STARTED
        with self.lock():
            if folder.exists():
                same = started.is_file() and json.loads(started.read_text()).get("fingerprint") == fp
                if not same:
                    shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / DONE).unlink(missing_ok=True)  # nothing half-written is left marked done
            write_json_atomic(started, {"stage": stage, "fingerprint": fp, "started_at": time.time()})
        return folder

    def mark_done(self, stage: str, result: StageResult, seconds: float) -> dict:
        marker = {
            "stage": stage,
            "fingerprint": self.fingerprint(stage),
            "config": to_dict(self.recipe.stage_config(stage)),
            "input": self.previous(stage),
            "counts": result.counts,
            "outputs": result.outputs,
            "seconds": round(seconds, 2),
            "finished_at": time.time(),
        }
        write_json_atomic(self.stage_dir(stage) / DONE, marker)
        return marker

    def write_resolved_recipe(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "recipe.resolved.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(to_yaml(self.recipe), encoding="utf-8")
        os.replace(tmp, path)
        return path


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def stage_runner(stage: str) -> Callable[[Recipe, Workspace], StageResult]:
    """Import a stage's run function lazily: `kamado --help` must not pay for torch and DeepSpeed."""
    if stage == "corpus":
        from kamado.corpus.stage import run
    elif stage == "tokenizer":
        from kamado.tokenizer.stage import run
    elif stage in ("pretrain", "sft", "reward", "dpo", "ppo"):
        from kamado.train.launch import run_training_stage

        return lambda recipe, ws: run_training_stage(recipe, ws, stage)
    elif stage == "release":
        from kamado.release.stage import run
    else:
        raise KeyError(stage)
    return run


def select_stages(recipe: Recipe, only: list[str] | None = None, until: str | None = None) -> list[str]:
    from kamado.recipe import RecipeError

    for name in (only or []) + ([until] if until else []):
        if name not in STAGES:
            raise RecipeError(f"unknown stage '{name}' (known: {', '.join(STAGES)})")
        if name not in recipe.stages:
            raise RecipeError(f"stage '{name}' is not in this recipe's 'stages' list {recipe.stages}")
    stages = list(recipe.stages)
    if until:
        stages = stages[: stages.index(until) + 1]
    if only:
        stages = [s for s in stages if s in only]
    return stages


def run_one_stage(recipe: Recipe, stage: str, log: Callable[[str], None] = print,
                  run: Callable[[Recipe, Workspace], StageResult] | None = None) -> str:
    """Run one stage if it is not done: check its input, prepare its folder, run, mark it done.

    The local executor calls it for every stage; Slurm jobs call it with `run` replaced by their part of the
    stage (the corpus finish job, rank 0 of a training job). Everything that depends on the previous stage's
    DONE.json (the fingerprint) is computed here, at run time, never at submit time."""
    ws = Workspace(recipe)
    ws.require_previous(stage)
    if ws.is_done(stage):
        log(f"[kamado] {stage}: done already (fingerprint {ws.fingerprint(stage)}), skipping")
        return "skipped"
    log(f"[kamado] {stage}: running -> {ws.stage_dir(stage)}")
    ws.prepare(stage)
    start = time.time()
    result = (run or stage_runner(stage))(recipe, ws)
    marker = ws.mark_done(stage, result, time.time() - start)
    log(f"[kamado] {stage}: done in {marker['seconds']:.1f}s {_summary(result.counts)}")
    return "done"


def run_stages(recipe: Recipe, stages: list[str], log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the selected stages in order on this machine; returns {stage: 'skipped' | 'done'}."""
    Workspace(recipe).write_resolved_recipe()
    return {stage: run_one_stage(recipe, stage, log) for stage in stages}


def _summary(counts: dict) -> str:
    flat = {k: v for k, v in counts.items() if isinstance(v, (int, float, str))}
    return " ".join(f"{k}={v}" for k, v in list(flat.items())[:6])
