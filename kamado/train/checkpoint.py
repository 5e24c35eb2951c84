"""DeepSpeed checkpoints that a kill, a full disk or a lost `latest` file never turn into lost training.

Saving step N (every rank, then rank 0):
1. every rank writes its DeepSpeed files into `tmp-stepN/` and fsyncs them; a barrier;
2. rank 0 writes `kamado.json` (what the checkpoint can be resumed by) and `MANIFEST.json` (every file of every
   rank with its size) into it — the manifest exists only once every rank's files are complete and synced;
3. rank 0 renames `tmp-stepN/` to `stepN/`. If `stepN/` exists already (the same step saved again), it is first
   renamed to `replaced-stepN/` and deleted only after the new copy is in place, so a complete copy exists at
   every instant;
4. `latest` is replaced atomically, last; then checkpoints beyond `keep` are pruned (renamed `deleting-…`, then
   deleted).

Loading: rank 0 first repairs what a kill can leave (a `replaced-` copy whose successor never arrived is put back;
`tmp-` and `deleting-` folders are removed), then resumes from the tag in `latest` if that checkpoint is complete
(its manifest matches the files on disk), else — with a warning — from the newest complete one. Checkpoint folders
that exist but none complete is an error, not a silent start from step 0. Only folders with kamado's names
(`stepNNNNNNN`, holding `kamado.json`, and the `tmp-`/`replaced-`/`deleting-` forms of those) are ever deleted.

The manifest checks sizes, not content: hashing every save would read the whole optimizer state back (hundreds of
GB at scale); a torn or missing file changes sizes, and DeepSpeed's own load catches the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from kamado.durable import fsync_dir, fsync_tree, write_atomic
from kamado.train.elastic import IncompatibleCheckpoint, load_any_world_size  # load: identity check, resharding

MANIFEST = "MANIFEST.json"
META = "kamado.json"
TAG = re.compile(r"^step\d{7}$")
TEMP_PREFIXES = ("tmp-", "replaced-", "deleting-")  # every transient name kamado gives a checkpoint folder


class CheckpointWriteError(RuntimeError):
    pass


class NoCompleteCheckpoint(RuntimeError):
    pass


def tag_for(step: int) -> str:
    return f"step{step:07d}"


def step_of(tag: str) -> int:
    return int(tag[4:])


def manifest_problem(tag_dir: Path) -> str | None:
    """Why `tag_dir` is not a complete checkpoint, or None when every file its manifest lists is there whole."""
    manifest = tag_dir / MANIFEST
    if not manifest.is_file():
        return f"{manifest} is missing (the save did not finish)"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{manifest} is unreadable ({exc})"
    for name, size in files.items():
        path = tag_dir / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def complete_tags(folder: Path) -> list[str]:
    """Complete kamado checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if TAG.match(p.name) and p.is_dir() and manifest_problem(p) is None)


def resume_tag(folder: Path) -> tuple[str | None, str | None]:
    """(tag to resume from, warning): `latest` if it names a complete checkpoint, else the newest complete one."""
    complete = complete_tags(folder)
    marker = folder / "latest"
    if marker.is_file():
        try:
            named = marker.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            named, problem = None, f"is unreadable ({exc})"
        else:
            if named in complete:
                return named, None
            if not TAG.match(named):
                problem = f"holds {named[:40]!r}, not a checkpoint tag"
            elif not (folder / named).is_dir():
                problem = f"names {named}, which does not exist"
            else:
                problem = f"names {named}, which is incomplete: {manifest_problem(folder / named)}"
    else:
        problem = "is missing"
    if complete:
        return complete[-1], f"{marker} {problem}; resuming from the newest complete checkpoint {folder / complete[-1]}"
    leftovers = sorted(p.name for p in folder.iterdir() if TAG.match(p.name)) if folder.is_dir() else []
    if leftovers:
        reasons = "; ".join(f"{t}: {manifest_problem(folder / t)}" for t in leftovers[-3:])
        raise NoCompleteCheckpoint(
            f"{folder} holds checkpoints ({', '.join(leftovers)}) but none is complete ({reasons}). Move them out of "
            f"the way to start this stage from step 0")
    return None, None


def _warn(message: str) -> None:
    print(f"[kamado] warning: {message}", file=sys.stderr, flush=True)


class CheckpointManager:
    def __init__(self, folder: Path, keep: int, rank: int, identity: dict[str, Any]):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be at least 1 (got {keep}): the newest checkpoint is what a run resumes from")
        self.folder, self.keep, self.rank, self.identity = folder, keep, rank, identity
        self.loaded_tag: str | None = None
        self.pending: tuple | None = None  # (engine, tag, tmp folder, step, prune) of a save not yet committed

    def latest(self) -> str | None:
        """The checkpoint a resume would load (see `resume_tag`), without its warning."""
        return resume_tag(self.folder)[0]

    # ------------------------------------------------------------ saving
    def save(self, engine, step: int, client_state: dict[str, Any], prune: bool = True) -> str:
        """Save `engine` at `step` (every rank). `prune=False` keeps older checkpoints until `prune()`: a second
        engine saved with the same tags (PPO's value model) must keep the tag its partner still resumes from.
        With a background writer (train/async_checkpoint.py) this returns once the state is copied to host
        memory; the checkpoint is committed (manifest, rename, `latest`) by `finish`, called by every rank."""
        self.finish()  # one save at a time: the previous one is committed first
        tag = tag_for(step)
        tmp = self.folder / f"tmp-{tag}"
        if self.rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.recover()
        dist.barrier()
        try:
            engine.save_checkpoint(str(self.folder), tag=tmp.name, client_state=client_state, save_latest=False)
        except (OSError, RuntimeError) as exc:
            raise self._write_error(tag, tmp, exc) from exc
        self.pending = (engine, tag, tmp, step, prune)
        if not getattr(getattr(engine, "checkpoint_engine", None), "writing", False):
            self.finish()
        return tag

    def finish(self) -> str | None:
        """Commit the save in progress, if any (every rank): wait for its files, sync them, then rank 0 writes the
        manifest, renames the folder and moves `latest`. Returns its tag."""
        if self.pending is None:
            return None
        engine, tag, tmp, step, prune = self.pending
        self.pending = None
        try:
            wait = getattr(getattr(engine, "checkpoint_engine", None), "wait", None)
            if wait is not None:
                wait()  # a background write's error surfaces here, on the rank that had it
            fsync_tree(tmp)  # DeepSpeed never syncs; this rank's files (and the others' so far) reach the disk
        except (OSError, RuntimeError) as exc:
            raise self._write_error(tag, tmp, exc) from exc
        dist.barrier()  # every rank's files are complete and synced
        if self.rank == 0:
            try:
                write_atomic(tmp / META, json.dumps({**self.identity, "step": step}, indent=2))
                files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
                write_atomic(tmp / MANIFEST, json.dumps({"step": step, "files": files}, indent=1))
                self._install(tmp, tag)
                write_atomic(self.folder / "latest", tag)
            except OSError as exc:
                raise CheckpointWriteError(
                    f"committing checkpoint {tag} in {self.folder} failed: {exc}. {self._previous()}") from exc
            if prune:
                self._prune(keep_tag=tag)
        dist.barrier()
        return tag

    def _write_error(self, tag: str, tmp: Path, exc: BaseException) -> CheckpointWriteError:
        # A failing rank stops here; the others wait at a barrier until the launcher stops them. No manifest
        # is written, so nothing reads this half-written copy; the previous checkpoint is untouched.
        return CheckpointWriteError(
            f"saving checkpoint {tag} failed on rank {self.rank} while writing {tmp}: {exc}. {self._previous()}; "
            f"{tmp.name} is removed by the next run")

    def prune(self) -> None:
        if self.rank == 0:
            tag = self.latest()
            if tag is not None:
                self._prune(keep_tag=tag)

    def _previous(self) -> str:
        try:
            tag = self.latest()
        except NoCompleteCheckpoint:
            tag = None
        if tag is None:
            return "There is no earlier complete checkpoint"
        return f"The previous checkpoint {self.folder / tag} is intact and a rerun resumes from it"

    def _install(self, tmp: Path, tag: str) -> None:
        final = self.folder / tag
        aside = self.folder / f"replaced-{tag}"
        if final.exists():
            if not (final / META).is_file():
                raise CheckpointWriteError(f"{final} exists and is not a kamado checkpoint (no {META}); refusing to replace it")
            os.rename(final, aside)  # the complete old copy stays until the new one is in place
        os.rename(tmp, final)
        fsync_dir(self.folder)
        if aside.exists():
            self._delete(aside)

    def _delete(self, path: Path) -> None:
        """Rename to `deleting-…` (one atomic step: a half-deleted folder never carries a checkpoint's name), then
        remove. Failures are warnings naming the path: a leftover folder costs space, not the run."""
        doomed = path if path.name.startswith("deleting-") else self.folder / f"deleting-{path.name}"
        try:
            if doomed != path:
                os.rename(path, doomed)
            shutil.rmtree(doomed)
        except OSError as exc:
            _warn(f"could not delete {path}: {exc}")

    def _prune(self, keep_tag: str) -> None:
        marked = [t for t in complete_tags(self.folder) if (self.folder / t / META).is_file()]
        for tag in marked[: -self.keep]:
            if tag != keep_tag:
                self._delete(self.folder / tag)

    def recover(self) -> None:
        """Undo what a kill in the middle of a save or a prune leaves behind (rank 0, before saving or loading)."""
        if not self.folder.is_dir():
            return
        for stale in self.folder.glob(".latest.tmp-*"):  # durable.write_atomic's temp file of a killed writer
            stale.unlink()
        for path in sorted(self.folder.iterdir()):
            prefix = next((p for p in TEMP_PREFIXES if path.name.startswith(p)), None)
            if prefix is None or not path.is_dir() or not TAG.match(path.name.rsplit("-", 1)[-1]):
                continue
            tag = path.name.rsplit("-", 1)[-1]
            final = self.folder / tag
            if prefix == "replaced-" and manifest_problem(path) is None and manifest_problem(final) is not None:
                # killed between moving the old copy aside and putting the new one in place: put the old one back
                if final.exists():
                    self._delete(final)
                os.rename(path, final)
                fsync_dir(self.folder)
                _warn(f"restored {final} from {path.name} (a save of the same step was cut short)")
            else:
                self._delete(path)

    # ------------------------------------------------------------ loading
    def check(self, tag: str) -> None:
        meta_path = self.folder / tag / META
        if not meta_path.is_file():
            raise IncompatibleCheckpoint(f"{self.folder / tag}: not a kamado checkpoint ({META} missing)")
        meta = json.loads(meta_path.read_text())
        for key, want in self.identity.items():
            if meta.get(key) != want:
                raise IncompatibleCheckpoint(
                    f"{self.folder / tag}: saved with {key}={meta.get(key)!r}, this run has {key}={want!r}; "
                    f"it cannot be resumed (delete {self.folder} to start over)")

    def load(self, engine, tag: str | None = None) -> dict[str, Any] | None:
        """Resume `engine` from the checkpoint rank 0 chose (every rank loads the same tag), or from `tag`, which
        must then be complete here (a second engine resumed at its partner's step)."""
        choice: list[Any] = [None, None]
        if self.rank == 0:
            try:
                self.recover()
                if tag is None:
                    choice = list(resume_tag(self.folder))
                elif manifest_problem(self.folder / tag) is not None:
                    raise NoCompleteCheckpoint(f"{self.folder / tag} is needed to resume at {tag} but is not complete: "
                                               f"{manifest_problem(self.folder / tag)}")
                else:
                    choice = [tag, None]
            except NoCompleteCheckpoint as exc:
                choice = [None, exc]
        dist.broadcast_object_list(choice, src=0)
        tag, note = choice
        if isinstance(note, NoCompleteCheckpoint):
            raise NoCompleteCheckpoint(str(note))
        if note and self.rank == 0:
            _warn(note)
        if tag is None:
            return None
        path, client = load_any_world_size(self, engine, tag)
        if path is None:
            raise IncompatibleCheckpoint(f"{self.folder / tag}: DeepSpeed could not load it")
        self.loaded_tag = tag
        return client
