"""Resume on a different number of ranks (a shared cluster rarely gives the same allocation twice).

A ZeRO-1/2 checkpoint holds one optimizer partition per rank, and a ZeRO-3 one also one flat partition of the
weights per rank, so DeepSpeed cannot load either at another world size. When the world size changed, rank 0
converts the checkpoint once to DeepSpeed's universal format (one fp32 master copy and Adam moments per parameter,
no partitioning: deepspeed.checkpoint.ds_to_universal, which gathers ZeRO-3 partitions too) into
`<checkpoints>/universal-stepN/`, every rank loads it with `load_universal` (under ZeRO-3 each rank cuts its own
partition out of it), and the folder is deleted after the load (the next save is an ordinary checkpoint at the new
world size). ZeRO-0 checkpoints hold no partitions and load at any world size as they are. Tested on CPU from 2
ranks to 1 and from 1 to 2 at ZeRO-2 and ZeRO-3 (DeepSpeed 0.19.8): the resumed losses match the straight run's.

The data order and the lr schedule continue only if a step still covers the same samples: a step is a pure
function of the global sample indices step·G … (step+1)·G − 1 with G = world × grad_accum × micro-batch
(train/data.py), so G must not change. A run that changes the world size sets grad_accum (or the micro-batch) to
keep G; otherwise the resume is refused with the setting that would keep it.

Called from CheckpointManager.load (one line) in place of the identity check and DeepSpeed's load.
"""

from __future__ import annotations

import json
import shutil
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch.distributed as dist

UNIVERSAL_PREFIX = "universal-"
META = "kamado.json"  # the identity CheckpointManager writes beside each checkpoint
MARKER = "kamado-universal.json"  # marks a folder kamado converted (and may delete)


class IncompatibleCheckpoint(RuntimeError):
    """A checkpoint this run cannot continue from (another identity, samples per step or ZeRO stage). Defined here,
    where the checks are, and imported by kamado.train.checkpoint: no import cycle between the two."""


def _rank0_print(message: str) -> None:
    if dist.get_rank() == 0:
        print(f"[kamado] {message}", file=sys.stderr, flush=True)


def saved_train_batch(tag_dir: Path) -> int | None:
    """The global batch (samples per step) a checkpoint was trained with, from DeepSpeed's own copy of its config."""
    import torch

    states = sorted(tag_dir.glob("*mp_rank_*_model_states.pt"))  # ZeRO-3 names them zero_pp_rank_R_mp_rank_…
    if not states:
        return None
    saved = torch.load(states[0], map_location="cpu", weights_only=False, mmap=True)
    config = saved.get("ds_config") or {}
    return config.get("train_batch_size")


def check_except_world_size(manager, tag: str) -> dict[str, Any]:
    """CheckpointManager.check, for every identity key but world_size; returns the saved identity."""
    meta_path = manager.folder / tag / META
    if not meta_path.is_file():
        raise IncompatibleCheckpoint(f"{manager.folder / tag}: not a kamado checkpoint ({META} missing)")
    meta = json.loads(meta_path.read_text())
    for key, want in manager.identity.items():
        if key != "world_size" and meta.get(key) != want:
            raise IncompatibleCheckpoint(
                f"{manager.folder / tag}: saved with {key}={meta.get(key)!r}, this run has {key}={want!r}; "
                f"it cannot be resumed (delete {manager.folder} to start over)")
    return meta


def convert_to_universal(source: Path, target: Path) -> None:
    """ds_to_universal into `target` (rank 0 only); a leftover of an interrupted conversion is replaced."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    if target.exists():
        if not (target / MARKER).is_file():
            raise RuntimeError(f"{target} exists and was not written by kamado; refusing to overwrite it")
        shutil.rmtree(target)
    ds_to_universal(Namespace(input_folder=str(source), output_folder=str(target), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True))
    (target / MARKER).write_text(json.dumps({"converted_from": source.name}))


def load_any_world_size(manager, engine, tag: str):
    """Check the checkpoint's identity and load it into `engine`; reshard when it was saved at another world size.
    Returns DeepSpeed's (path, client_state)."""
    meta = check_except_world_size(manager, tag)
    saved_world, world = meta.get("world_size"), manager.identity.get("world_size")
    if saved_world == world:
        return engine.load_checkpoint(str(manager.folder), tag=tag)
    where = manager.folder / tag
    saved_batch, batch = saved_train_batch(where), engine.train_batch_size()
    if saved_batch != batch:
        micro = engine.train_micro_batch_size_per_gpu()
        hint = (f"set grad_accum={saved_batch // (micro * world)}" if saved_batch and saved_batch % (micro * world) == 0
                else "change micro_batch_size and grad_accum so that world x micro-batch x grad_accum equals it")
        raise IncompatibleCheckpoint(
            f"{where}: saved by {saved_world} ranks with {saved_batch} samples per step; this run has {world} ranks "
            f"and {batch} samples per step. The data order and the lr schedule continue only with the same samples "
            f"per step: {hint}")
    stage = meta.get("zero_stage")
    if stage == 0:
        _rank0_print(f"{where}: saved by {saved_world} ranks, resuming on {world}: ZeRO-0 checkpoints are not "
                     "partitioned and load as they are")
        return engine.load_checkpoint(str(manager.folder), tag=tag)
    if stage not in (1, 2, 3):
        raise IncompatibleCheckpoint(f"{where}: saved by {saved_world} ranks with ZeRO-{stage}, unknown to kamado")
    universal = manager.folder / f"{UNIVERSAL_PREFIX}{tag}"
    _rank0_print(f"{where}: saved by {saved_world} ranks, this run has {world}: resharding through DeepSpeed's "
                 f"universal checkpoint ({universal})")
    if dist.get_rank() == 0:
        convert_to_universal(where, universal)
        shutil.copy2(where / META, universal / META)
    dist.barrier()
    engine._config.load_universal_checkpoint = True  # read by DeepSpeed at load time only
    try:
        path, client = engine.load_checkpoint(str(manager.folder), tag=universal.name)
    finally:
        engine._config.load_universal_checkpoint = False  # saves stay ordinary per-rank checkpoints
    dist.barrier()
    if path is None:
        raise IncompatibleCheckpoint(f"{universal}: DeepSpeed could not load the universal checkpoint")
    if dist.get_rank() == 0:
        shutil.rmtree(universal, ignore_errors=True)
    return path, client
