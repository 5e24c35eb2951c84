"""A real TrainLoop on one gloo rank (DeepSpeed ZeRO-2 on CPU, a tiny Llama, real token shards), for the tests
that look inside the loop (host syncs, background checkpoint saves)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def one_rank():
    """A one-rank gloo process group (no port) with DeepSpeed's communication set up. Made once per process and
    kept: DeepSpeed caches its groups, so a second group made after a destroy would meet stale ones."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch.distributed as dist

    from kamado.train.dist import DistEnv

    env = DistEnv(0, 0, 1, "127.0.0.1", 0)
    if not dist.is_initialized():
        env.export()  # DeepSpeed asks for LOCAL_RANK even with one rank
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        deepspeed.init_distributed(dist_backend="gloo")
    yield env


def tiny_loop(env, workdir: Path, out_name: str = "out", **cfg_overrides):
    """A TrainLoop over tokens shared by every loop in `workdir`."""
    from kamado.train.data import PretrainTask
    from kamado.train.loop import TrainLoop
    from kamado.train.model import Shape, build_model, llama_config
    from tests.reliability.harness import VOCAB, make_tokens, train_config

    cfg = train_config(**cfg_overrides)
    tokens = workdir / "tokens"
    if not (tokens / "index.json").is_file():
        make_tokens(tokens)
    torch.manual_seed(cfg.seed)
    model = build_model(llama_config(Shape(32, 64, 2, 2, 1, 64), VOCAB, 1, 2, 0))
    task = PretrainTask([(tokens, 1.0)], cfg.seq_len, cfg.seed)
    return TrainLoop(cfg, model, task, workdir / out_name, env, torch.device("cpu"))
