"""Background checkpoint saves (`async_checkpoint`, #19) on a real one-rank DeepSpeed ZeRO-2 loop: the run and its
checkpoints are the same as with blocking saves, and a save being written is never `latest` (the atomic
MANIFEST/rename protocol of train/checkpoint.py holds)."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from kamado.train import async_checkpoint
from kamado.train.checkpoint import MANIFEST, CheckpointWriteError, complete_tags, manifest_problem
from tests.train.tiny_loop import one_rank, tiny_loop

pytestmark = pytest.mark.distributed
RUN = dict(max_steps=6, checkpoint_every=2, keep_checkpoints=3, log_every=3)


def _losses(out) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return True  # other objects (configs, versions) are DeepSpeed's own bookkeeping


def test_background_saves_give_the_same_run_and_the_same_checkpoints(tmp_path):
    with one_rank() as env:
        blocking = tiny_loop(env, tmp_path, "blocking", **RUN).run()
        background_loop = tiny_loop(env, tmp_path, "background", async_checkpoint=True, **RUN)
        assert isinstance(background_loop.engine.checkpoint_engine, async_checkpoint.AsyncCheckpointEngine)
        background = background_loop.run()
    assert _losses(tmp_path / "background") == _losses(tmp_path / "blocking")
    assert (background.first_loss, background.last_loss, background.val_loss) == (blocking.first_loss, blocking.last_loss, blocking.val_loss)
    assert len(background.checkpoint_seconds) == len(blocking.checkpoint_seconds) == 3
    tags = complete_tags(tmp_path / "blocking" / "checkpoints")
    assert tags == complete_tags(tmp_path / "background" / "checkpoints") == ["step0000002", "step0000004", "step0000006"]
    assert (tmp_path / "background" / "checkpoints" / "latest").read_text() == "step0000006"
    for tag in tags:  # every file holds the same tensors: the snapshot is the state at the save, not later
        for path in sorted((tmp_path / "blocking" / "checkpoints" / tag).glob("*.pt")):
            twin = tmp_path / "background" / "checkpoints" / tag / path.name
            assert _same(torch.load(path, weights_only=False), torch.load(twin, weights_only=False)), twin
    def reported_at(out) -> list[int]:  # a save's seconds go into the record of the first step after its commit
        return [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "checkpoint_seconds" in r]

    assert reported_at(tmp_path / "blocking") == [3, 5]  # saved after steps 2 and 4
    assert reported_at(tmp_path / "background") == [4]  # step 2's save committed at log step 3; step 4's at the end


def test_a_save_being_written_is_not_latest_and_a_failed_write_leaves_the_previous_one(tmp_path, monkeypatch):
    release = threading.Event()
    real_write = async_checkpoint._write

    def held_write(state, path, zipfile):
        release.wait(30)
        if "step0000003" in path:
            raise OSError(28, "No space left on device")
        real_write(state, path, zipfile)

    monkeypatch.setattr(async_checkpoint, "_write", held_write)
    with one_rank() as env:
        loop = tiny_loop(env, tmp_path, async_checkpoint=True, max_steps=3)
        manager, folder = loop.checkpoints, tmp_path / "out" / "checkpoints"
        manager.save(loop.engine, 1, {"step": 1})
        assert manager.pending is not None and (folder / "tmp-step0000001").is_dir()
        assert not (folder / "tmp-step0000001" / MANIFEST).exists() and not (folder / "latest").exists()
        assert complete_tags(folder) == [] and manager.latest() is None
        release.set()
        assert manager.finish() == "step0000001"
        assert (folder / "latest").read_text() == "step0000001" and manifest_problem(folder / "step0000001") is None

        manager.save(loop.engine, 3, {"step": 3})  # its write fails (a full disk) in the background
        with pytest.raises(CheckpointWriteError, match="step0000003.*No space left.*step0000001 is intact"):
            manager.finish()
    assert (folder / "latest").read_text() == "step0000001" and complete_tags(folder) == ["step0000001"]
