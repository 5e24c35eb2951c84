"""The one training loop (pretrain, sft, dpo differ only in their task): DeepSpeed engine, checkpoints, metrics.

Checkpoints are written under a temporary tag, then renamed and recorded in `latest` once every rank has
finished, so a run cut short mid-save resumes from the previous complete checkpoint. A SIGUSR1/SIGTERM sets a
flag; all ranks agree on it each step (an all-reduce), save, and exit with STOPPED_EXIT_CODE.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from kamado.recipe import TrainConfig
from kamado.train.data import batch_indices
from kamado.train.dist import DistEnv

STOPPED_EXIT_CODE = 3  # checkpointed on a signal; the launcher (or Slurm) is expected to requeue


class Task(Protocol):
    name: str

    def batch(self, indices: list[int]) -> dict: ...

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]: ...

    def val_batches(self, micro_batch: int, limit: int = 8): ...


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_lambda(cfg: TrainConfig):
    """Linear warmup, then cosine decay to min_lr_ratio × lr at max_steps."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class _StopFlag:
    def __init__(self) -> None:
        self.raised = False
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.raised = True


@dataclass
class LoopResult:
    steps: int
    first_loss: float | None
    last_loss: float | None
    val_loss: float | None
    tokens: int
    stopped: bool


class TrainLoop:
    def __init__(self, cfg: TrainConfig, model, task: Task, out_dir: Path, env: DistEnv, device: torch.device):
        self.cfg, self.task, self.out_dir, self.env, self.device = cfg, task, out_dir, env, device
        self.ckpt_dir = out_dir / "checkpoints"
        import deepspeed

        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
        self.ds_config = deepspeed_config(cfg, env.world_size)
        if env.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "deepspeed_config.json").write_text(json.dumps(self.ds_config, indent=2))
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        self.step = 0
        self.stop = _StopFlag()

    # ------------------------------------------------------------ checkpoints
    def _latest_tag(self) -> str | None:
        latest = self.ckpt_dir / "latest"
        if not latest.is_file():
            return None
        tag = latest.read_text().strip()
        return tag if (self.ckpt_dir / tag).is_dir() else None

    def resume(self) -> bool:
        tag = self._latest_tag()
        if tag is None:
            return False
        _, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag)
        self.step = int(client["step"])
        if self.env.rank == 0:
            print(f"[kamado] {self.task.name}: resumed from {self.ckpt_dir / tag} at step {self.step}", flush=True)
        return True

    def save(self) -> str:
        tag = f"step{self.step:07d}"
        tmp_tag = f"tmp-{tag}"
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tmp_tag, client_state={"step": self.step}, save_latest=False)
        dist.barrier()
        if self.env.rank == 0:
            final = self.ckpt_dir / tag
            if final.exists():
                shutil.rmtree(final)
            os.replace(self.ckpt_dir / tmp_tag, final)
            tmp = self.ckpt_dir / "latest.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.ckpt_dir / "latest")
            kept = sorted(p for p in self.ckpt_dir.glob("step*") if p.is_dir())
            for old in kept[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return tag

    # ------------------------------------------------------------ loop
    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _mean_across_ranks(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.env.world_size).tolist()

    def _stop_requested(self) -> bool:
        t = torch.tensor([1.0 if self.stop.raised else 0.0], device=self.device)
        dist.all_reduce(t)
        return t.item() > 0

    def validate(self) -> float | None:
        self.engine.eval()
        losses = []
        with torch.no_grad():
            for batch in self.task.val_batches(self.cfg.micro_batch_size):
                loss, _ = self.task.loss(self.engine, self._to_device(batch))
                losses.append(loss.item())
        self.engine.train()
        if not losses:
            return None
        return self._mean_across_ranks([sum(losses) / len(losses)])[0]

    def run(self) -> LoopResult:
        cfg, env = self.cfg, self.env
        self.resume()
        metrics_path = self.out_dir / "metrics.jsonl"
        first_loss = last_loss = None
        tokens_per_step = 0
        stopped = False
        self.engine.train()
        t_last = time.time()
        while self.step < cfg.max_steps:
            step_loss = 0.0
            extra: dict[str, float] = {}
            n_tokens = 0
            for micro in range(cfg.grad_accum):
                idx = batch_indices(self.step, micro, cfg.grad_accum, env.rank, env.world_size, cfg.micro_batch_size)
                batch = self._to_device(self.task.batch(idx))
                loss, parts = self.task.loss(self.engine, batch)
                self.engine.backward(loss)
                self.engine.step()
                step_loss += loss.item() / cfg.grad_accum
                for k, v in parts.items():
                    extra[k] = extra.get(k, 0.0) + v / cfg.grad_accum
                n_tokens += int(batch["input_ids"].numel())
            self.step += 1
            keys = sorted(extra)
            reduced = self._mean_across_ranks([step_loss, *[extra[k] for k in keys]])
            loss_all, extra = reduced[0], dict(zip(keys, reduced[1:]))
            tokens_per_step = n_tokens * env.world_size
            if first_loss is None:
                first_loss = loss_all
            last_loss = loss_all
            if env.rank == 0:
                now = time.time()
                record: dict[str, Any] = {
                    "step": self.step, "loss": round(loss_all, 6), "lr": self.engine.get_lr()[0],
                    "grad_norm": _as_float(self.engine.get_global_grad_norm()), "tokens": tokens_per_step,
                    "tokens_per_s": round(tokens_per_step / max(now - t_last, 1e-9), 1), "time": now,
                    **{k: round(v, 6) for k, v in extra.items()},
                }
                t_last = now
                with open(metrics_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                if self.step % cfg.log_every == 0 or self.step == 1 or self.step == cfg.max_steps:
                    shown = " ".join(f"{k}={v:.4f}" for k, v in extra.items())
                    print(f"[{self.task.name}] step {self.step}/{cfg.max_steps} loss {loss_all:.4f} lr {record['lr']:.2e} "
                          f"{record['tokens_per_s']:.0f} tok/s {shown}", flush=True)
            if self._stop_requested():
                self.save()
                stopped = True
                if env.rank == 0:
                    print(f"[kamado] {self.task.name}: signal received, checkpoint saved at step {self.step}", flush=True)
                break
            if self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                self.save()
        if not stopped:
            self.save()
        val_loss = None if stopped else self.validate()
        return LoopResult(self.step, first_loss, last_loss, val_loss, tokens_per_step * self.step, stopped)


def _as_float(x) -> float | None:
    if x is None:
        return None
    return float(x.item() if isinstance(x, torch.Tensor) else x)
