"""The stage contract: workspace folders, done-markers with a fingerprint, skip / resume / extend / redo.

A stage is `run(recipe, ws) -> StageResult` writing only into `<workdir>/<stage>/`. It is done when
`<stage>/DONE.json` exists and its fingerprint matches: a hash of the stage's result keys (operational keys such
as log_every or checkpoint_every are left out, see kamado/recipe.py), of its input files' contents
(kamado/inputs.py) and of the done-marker of the stage before it. Redoing a stage therefore changes the
fingerprint of every stage after it, and they are redone too; stages before it are untouched.

A training stage's max_steps is extendable: it is not in the fingerprint; DONE.json records the steps trained,
and a recipe asking for more keeps the folder and the loop resumes from its newest checkpoint. Asking for fewer
steps than already trained is refused before any work (`--fresh STAGE` trains anew).

Folders are never deleted behind the user's back: a stage folder whose recorded fingerprint differs from the
recipe's is moved aside to `<stage>.superseded-<UTC time>/` with SUPERSEDED.json naming what changed; only
folders kamado marked (`.kamado`, STARTED.json or DONE.json) are moved, and an unmarked folder with a stage's
name stops the run before any work. `kamado clean` deletes superseded folders.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kamado.durable import write_atomic
from kamado.fingerprint import describe_change, fingerprint_of, result_config
from kamado.pipeline import current
from kamado.recipe import Recipe, RecipeError, to_dict, to_yaml

DONE = "DONE.json"
STARTED = "STARTED.json"
MARK = ".kamado"  # written when kamado creates a stage folder: the folder is kamado's to move aside
SUPERSEDED = "SUPERSEDED.json"
SUPERSEDED_INFIX = ".superseded-"
MARKERS = (MARK, STARTED, DONE, STARTED + ".tmp", DONE + ".tmp")


def _is_marker(name: str) -> bool:
    """kamado's own marker files, or a writer's temp copy of one (durable.write_atomic: `.NAME.tmp-PID`)."""
    return name in MARKERS or any(name.startswith(f".{m}.tmp-") for m in (STARTED, DONE))


class StageConflict(RecipeError):
    """A stage folder kamado must not touch (unmarked, written by a live run) or a recipe that asks for less
    than was already done; raised before any work."""


@dataclass
class StageResult:
    counts: dict[str, Any] = field(default_factory=dict)  # whatever the stage measured (docs, tokens, losses)
    outputs: list[str] = field(default_factory=list)  # paths relative to the stage folder


class Workspace:
    """The run folder: one sub-folder per stage plus the resolved recipe."""

    def __init__(self, recipe: Recipe):
        from kamado.inputs import InputHasher

        self.recipe = recipe
        self.root = Path(recipe.workdir)
        self.hasher = InputHasher(self.root)

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
        for prev in reversed(stages[: stages.index(stage)]):
            if prev in current().policy:  # not the reward stage: its scalar-head model is no policy
                return self.stage_dir(prev) / "hf"
        raise RuntimeError(f"stage {stage} needs a trained model, but no training stage comes before it")

    def tokenizer_dir(self) -> Path:
        return self.stage_dir("tokenizer") / "hf"

    # ------------------------------------------------------------ markers
    def read_done(self, stage: str) -> dict | None:
        return _read_json(self.stage_dir(stage) / DONE)

    def read_started(self, stage: str) -> dict | None:
        return _read_json(self.stage_dir(stage) / STARTED)

    def basis(self, stage: str) -> dict:
        """What the fingerprint hashes: result keys, input file identities, the upstream done-marker."""
        from kamado.inputs import expand

        prev = self.previous(stage)
        upstream = self.read_done(prev) if prev else None
        # A previous stage that is not done has no fingerprint yet; whoever asks must run it first.
        upstream_key = {"stage": prev, "fingerprint": upstream.get("fingerprint"), "finished_at": upstream.get("finished_at")} if upstream else None
        inputs = self.hasher.identities(expand(self.recipe, stage))
        self.hasher.save()
        return {"stage": stage, "config": result_config(self.recipe.stage_config(stage)), "inputs": inputs,
                "upstream": upstream_key}

    def fingerprint(self, stage: str) -> str:
        return fingerprint_of(self.basis(stage))

    def is_done(self, stage: str) -> bool:
        done = self.read_done(stage)
        if done is None or done.get("fingerprint") != self.fingerprint(stage):
            return False
        trained = self.trained_steps(stage)
        return trained is None or trained >= self.recipe.stage_config(stage).max_steps

    def trained_steps(self, stage: str) -> int | None:
        """A finished training stage's steps (None for other stages): fewer than max_steps means extend it."""
        done = self.read_done(stage)
        if stage not in current().training or done is None:
            return None
        steps = done.get("trained_steps", done.get("max_steps"))
        return int(steps) if steps is not None else None

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

    # ------------------------------------------------------------ checks before any work
    def check_folder(self, stage: str) -> None:
        """An existing folder with the stage's name must be kamado's (marked), else nothing in it is touched."""
        folder = self.stage_dir(stage)
        if folder.exists() and not is_marked(folder):
            raise StageConflict(
                f"{folder} exists but kamado did not create it (no {MARK}, {STARTED} or {DONE} in it); "
                f"kamado will not write into or move it. Move it away or choose another workdir")

    def check_steps(self, stage: str) -> None:
        """Refuse a max_steps below what the stage (same fingerprint) has already trained."""
        if stage not in current().training:
            return
        want = self.recipe.stage_config(stage).max_steps
        recorded = self.read_done(stage) or self.read_started(stage)
        if recorded is None or recorded.get("fingerprint") != self.fingerprint(stage):
            return  # another config: the folder is moved aside and the stage trains anew
        have = self.trained_steps(stage) or newest_checkpoint_step(self.stage_dir(stage))
        if have is not None and have > want:
            raise StageConflict(
                f"{stage}.max_steps={want} is below the {have} steps already trained in {self.stage_dir(stage)}; "
                f"raise it back to {have} or more to keep that model, or pass --fresh {stage} to move the folder "
                f"aside and train {want} steps anew")

    def check_live_writer(self, stage: str) -> None:
        """An unfinished folder another live process on this host prepared with another fingerprint is refused:
        moving it aside under that process would split its outputs between two folders."""
        started = self.read_started(stage)
        if started is None or (self.stage_dir(stage) / DONE).exists() or started.get("fingerprint") == self.fingerprint(stage):
            return
        who = live_writer(started)
        if who:
            raise StageConflict(f"{self.stage_dir(stage)} is being written by {who} with another configuration; "
                                f"wait for it to finish or stop it, then run again")

    def preflight(self, stages: list[str], fresh: list[str] | tuple[str, ...] = ()) -> None:
        """Every check that can refuse a run, for all selected stages, before the first one starts."""
        for name in fresh:
            if name not in stages:
                raise RecipeError(f"--fresh {name}: stage {name} is not among the stages to run {stages}")
        for stage in stages:
            self.check_folder(stage)
            self.check_live_writer(stage)
            if stage not in fresh:
                self.check_steps(stage)

    # ------------------------------------------------------------ folders
    def prepare(self, stage: str, log: Callable[[str], None] = print) -> Path:
        """Make the stage folder ready: keep it to resume (or extend) when it was started with the same
        fingerprint, else move it aside (`<stage>.superseded-<time>/`) and start an empty one.

        Safe to call from several processes at once: the first one moves a stale folder aside, the others find
        STARTED.json with their fingerprint and keep what the first (and each other) already wrote."""
        folder = self.stage_dir(stage)
        basis = self.basis(stage)
        fp = fingerprint_of(basis)
        with self.lock():
            if folder.exists():
                self.check_folder(stage)
                recorded = self.read_started(stage) or self.read_done(stage)
                if recorded is None or recorded.get("fingerprint") != fp:
                    self.check_live_writer(stage)
                    self.set_aside(stage, describe_change(recorded, basis), log)
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / MARK).exists():
                write_json_atomic(folder / MARK, {"stage": stage, "created_at": time.time()})
            (folder / DONE).unlink(missing_ok=True)  # nothing half-written is left marked done
            write_json_atomic(folder / STARTED, {"stage": stage, "fingerprint": fp, "started_at": time.time(),
                                                 "basis": basis, **writer_identity()})
        return folder

    def set_aside(self, stage: str, changes: list[str], log: Callable[[str], None] = print) -> Path | None:
        """Move a marked stage folder to `<stage>.superseded-<UTC time>/` (a folder holding nothing but kamado's
        markers is simply removed). Returns the new path. Call with the workdir locked."""
        folder = self.stage_dir(stage)
        if not folder.exists():
            return None
        self.check_folder(stage)
        if all(_is_marker(p.name) for p in folder.iterdir()):
            shutil.rmtree(folder)
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.root / f"{stage}{SUPERSEDED_INFIX}{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.root / f"{stage}{SUPERSEDED_INFIX}{stamp}-{n}"
        os.replace(folder, target)
        write_json_atomic(target / SUPERSEDED, {"stage": stage, "superseded_at": time.time(), "changes": changes})
        log(f"[kamado] {stage}: {'; '.join(changes)}: the old folder is kept as {target} "
            f"(`kamado clean RECIPE` deletes superseded folders)")
        return target

    def superseded(self) -> list[tuple[Path, dict]]:
        """Folders moved aside, oldest first, with their SUPERSEDED.json."""
        out = []
        for path in sorted(self.root.glob(f"*{SUPERSEDED_INFIX}*")):
            info = _read_json(path / SUPERSEDED)
            if path.is_dir() and info is not None and is_marked(path) and path.name.split(SUPERSEDED_INFIX)[0] in current().names:
                out.append((path, info))
        return sorted(out, key=lambda item: item[1].get("superseded_at", 0))

    def mark_done(self, stage: str, result: StageResult, seconds: float) -> dict:
        """DONE.json with the fingerprint STARTED.json recorded: an input that changed while the stage ran makes
        the next run see a mismatch and redo it."""
        started = self.read_started(stage)
        basis = started["basis"] if started and "basis" in started else self.basis(stage)
        cfg = self.recipe.stage_config(stage)
        marker = {
            "stage": stage,
            "fingerprint": fingerprint_of(basis),
            "config": to_dict(cfg),
            "input": self.previous(stage),
            "counts": result.counts,
            "outputs": result.outputs,
            "seconds": round(seconds, 2),
            "finished_at": time.time(),
            "basis": basis,
        }
        if stage in current().training:
            marker["max_steps"] = cfg.max_steps
            steps = result.counts.get("steps")
            marker["trained_steps"] = int(steps) if isinstance(steps, (int, float)) else cfg.max_steps
        write_json_atomic(self.stage_dir(stage) / DONE, marker)
        return marker

    def write_resolved_recipe(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "recipe.resolved.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(to_yaml(self.recipe), encoding="utf-8")
        os.replace(tmp, path)
        return path


def is_marked(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (MARK, STARTED, DONE))


def newest_checkpoint_step(folder: Path) -> int | None:
    """The step of the newest `checkpoints/stepNNNNNNN` folder (kamado/train/checkpoint.py names them so)."""
    steps = [int(p.name[4:]) for p in (folder / "checkpoints").glob("step*") if p.is_dir() and p.name[4:].isdigit()]
    return max(steps) if steps else None


def writer_identity() -> dict:
    """Who prepared the folder: enough to tell later whether that process still runs on this host."""
    ident: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _process_start(os.getpid())}
    if os.environ.get("SLURM_JOB_ID"):
        ident["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return ident


def live_writer(started: dict) -> str | None:
    """'pid N on HOST' when the process that wrote STARTED.json still runs here (another host: cannot tell)."""
    pid = started.get("pid")
    if started.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return None
    if _process_start(pid) is None or _process_start(pid) != started.get("pid_started"):
        return None  # gone, or the pid was reused by another process
    return f"a live kamado run (pid {pid} on {started['host']})"


def _process_start(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
    except (OSError, ValueError, IndexError):
        return None


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: Any) -> None:
    """Temp + fsync + rename (+ fsync of the folder): a marker is either the old one or the whole new one. The temp
    name is the writer's own, so two processes writing the same marker never share a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, ensure_ascii=False, indent=2))


def run_one_stage(recipe: Recipe, stage: str, run: Callable[[Recipe, Workspace], StageResult],
                  log: Callable[[str], None] = print) -> str:
    """Run one stage if it is not done: check its input, prepare its folder, `run`, mark it done.

    The local executor calls it with the whole stage (kamado.local.run_here); Slurm jobs call it with their part
    of the stage (the finish job of a phased stage, rank 0 of a training job). Everything that depends on the previous stage's
    DONE.json (the fingerprint) is computed here, at run time, never at submit time."""
    ws = Workspace(recipe)
    ws.require_previous(stage)
    ws.check_steps(stage)
    if ws.is_done(stage):
        log(f"[kamado] {stage}: done already (fingerprint {ws.fingerprint(stage)}), skipping")
        return "skipped"
    trained = ws.trained_steps(stage)
    if trained is not None and ws.read_done(stage).get("fingerprint") == ws.fingerprint(stage):
        log(f"[kamado] {stage}: trained {trained} steps, the recipe asks {recipe.stage_config(stage).max_steps}: "
            f"resuming from the newest checkpoint")
    log(f"[kamado] {stage}: running -> {ws.stage_dir(stage)}")
    ws.prepare(stage, log)
    start = time.time()
    result = run(recipe, ws)
    marker = ws.mark_done(stage, result, time.time() - start)
    log(f"[kamado] {stage}: done in {marker['seconds']:.1f}s {_summary(result.counts)}")
    return "done"


def _summary(counts: dict) -> str:
    flat = {k: v for k, v in counts.items() if isinstance(v, (int, float, str))}
    return " ".join(f"{k}={v}" for k, v in list(flat.items())[:6])
