"""How long training waits for a checkpoint save: blocking saves vs background ones (`async_checkpoint`, #19).

One gloo rank, DeepSpeed ZeRO-2 on CPU, a Llama of --hidden/--layers (default ~58M parameters: a save writes the
fp32 weights and Adam's state, about 0.9 GB), random tokens. Each mode trains --steps steps saving every
--every; printed: seconds training waited per save (the loop's checkpoint_seconds: the whole save when blocking;
the copy to host memory plus any wait at the commit when in the background) and the run's wall time.

    python benchmarks/checkpoint_save_time.py [--steps 8 --every 2 --hidden 512 --layers 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


class RandomTokens:
    """A task of random token windows (a pure function of the indices, like kamado's own)."""

    name = "bench"

    def __init__(self, vocab: int, seq_len: int):
        self.vocab, self.seq_len = vocab, seq_len

    def batch(self, indices: list[int]) -> dict:
        g = torch.Generator().manual_seed(indices[0])
        rows = torch.randint(3, self.vocab, (len(indices), self.seq_len + 1), generator=g)
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}

    def loss(self, model, batch: dict):
        from kamado.train.data import causal_lm_loss

        return causal_lm_loss(model, batch), {}

    def val_batches(self, micro_batch: int, limit: int = 8):
        return iter(())


def one_mode(env, out: Path, background: bool, args) -> tuple[list[float], float]:
    from kamado.train.config import PretrainConfig
    from kamado.train.loop import TrainLoop
    from kamado.train.model import Shape, build_model, llama_config

    cfg = PretrainConfig(nproc_per_node=1, zero_stage=2, seq_len=128, micro_batch_size=2, max_steps=args.steps,
                         checkpoint_every=args.every, keep_checkpoints=2, log_every=args.steps, warmup_steps=1)
    cfg.async_checkpoint = background  # until TrainConfig has the key
    torch.manual_seed(0)
    shape = Shape(args.hidden, args.hidden * 8 // 3 // 64 * 64 + 64, args.layers, args.hidden // 64, args.hidden // 128, 256)
    model = build_model(llama_config(shape, 32000, 1, 2, 0))
    loop = TrainLoop(cfg, model, RandomTokens(32000, cfg.seq_len), out, env, torch.device("cpu"))
    start = time.perf_counter()
    result = loop.run()
    return result.checkpoint_seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    import deepspeed
    import torch.distributed as dist

    from kamado.train.dist import DistEnv

    env = DistEnv(0, 0, 1, "127.0.0.1", 0)
    env.export()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend="gloo")
    workdir = Path(tempfile.mkdtemp(prefix="kamado-ckpt-bench-"))
    try:
        rows = []
        for background in (False, True):
            seconds, wall = one_mode(env, workdir / ("background" if background else "blocking"), background, args)
            size = sum(p.stat().st_size for p in (workdir / ("background" if background else "blocking") / "checkpoints").rglob("*.pt"))
            rows.append((background, seconds, wall, size))
        print(f"\n{'mode':<11} {'saves':>5} {'waited s/save (median)':>23} {'each save':>28} {'run wall s':>10}")
        for background, seconds, wall, size in rows:
            print(f"{'background' if background else 'blocking':<11} {len(seconds):>5} {statistics.median(seconds):>23.3f} "
                  f"{' '.join(f'{s:.2f}' for s in seconds):>28} {wall:>10.1f}")
        print(f"checkpoint folder: {rows[0][3] / 2**30:.2f} GiB on disk (keep_checkpoints=2)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
