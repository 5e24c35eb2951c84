"""Atomic DeepSpeed checkpoints: written under a temporary tag, renamed once every rank is done, then recorded
in `latest`; the last N kept. A `kamado.json` beside each one records what it can be resumed by, so a run with
another model shape, world size or ZeRO stage fails with a clear message before DeepSpeed tries to load it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist


class IncompatibleCheckpoint(RuntimeError):
    pass


class CheckpointManager:
    def __init__(self, folder: Path, keep: int, rank: int, identity: dict[str, Any]):
        self.folder, self.keep, self.rank, self.identity = folder, keep, rank, identity

    def latest(self) -> str | None:
        marker = self.folder / "latest"
        if not marker.is_file():
            return None
        tag = marker.read_text().strip()
        return tag if (self.folder / tag).is_dir() else None

    def save(self, engine, step: int, client_state: dict[str, Any]) -> str:
        tag = f"step{step:07d}"
        tmp_tag = f"tmp-{tag}"
        engine.save_checkpoint(str(self.folder), tag=tmp_tag, client_state=client_state, save_latest=False)
        dist.barrier()
        if self.rank == 0:
            (self.folder / tmp_tag / "kamado.json").write_text(json.dumps({**self.identity, "step": step}, indent=2))
            final = self.folder / tag
            if final.exists():
                shutil.rmtree(final)
            os.replace(self.folder / tmp_tag, final)
            tmp = self.folder / "latest.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.folder / "latest")
            for old in sorted(p for p in self.folder.glob("step*") if p.is_dir())[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            for stale in self.folder.glob("tmp-step*"):  # left by a run killed mid-save
                shutil.rmtree(stale, ignore_errors=True)
        dist.barrier()
        return tag

    def check(self, tag: str) -> None:
        meta_path = self.folder / tag / "kamado.json"
        if not meta_path.is_file():
            raise IncompatibleCheckpoint(f"{self.folder / tag}: not a kamado checkpoint (kamado.json missing)")
        meta = json.loads(meta_path.read_text())
        for key, want in self.identity.items():
            if meta.get(key) != want:
                raise IncompatibleCheckpoint(
                    f"{self.folder / tag}: saved with {key}={meta.get(key)!r}, this run has {key}={want!r}; "
                    f"it cannot be resumed (delete {self.folder} to start over)")

    def load(self, engine) -> dict[str, Any] | None:
        tag = self.latest()
        if tag is None:
            return None
        from kamado.train.elastic import load_any_world_size  # identity check + load; reshards a changed world size

        path, client = load_any_world_size(self, engine, tag)
        if path is None:
            raise IncompatibleCheckpoint(f"{self.folder / tag}: DeepSpeed could not load it")
        return client
