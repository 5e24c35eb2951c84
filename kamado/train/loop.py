"""The training loop of pretrain, sft, dpo and reward (they differ only in their task): one DeepSpeed engine,
`grad_accum` micro-batches per optimizer step, on the shared StepLoop (train/steploop.py: resume, stop agreement,
checkpoints, log-step reductions; reporting is callbacks, train/callbacks.py). The DeepSpeed config (dsconfig),
the lr schedule (schedule), checkpoints (checkpoint) and the non-finite count (stability) have modules of their own.

A batch is a pure function of the step (train/data.py), so the step counter in the checkpoint is the loader's
position and a resumed run is bit-identical to a straight one on CPU.

Host–device syncs: the step's loss, token count, the task's extra terms and the grad norm stay on the device
until a log step. The per-micro-batch decision to skip a non-finite loss stays there too: its finite flag is
agreed by an all-reduce (no read), and a gradient hook zeroes that micro-batch's gradients with torch.where (NaN
does not survive it), which is what backpropagating a zero loss did before.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import torch

from kamado.train.callbacks import Callback, StepMetrics
from kamado.train.checkpoint import CheckpointManager
from kamado.train.config import TrainConfig
from kamado.train.data import batch_indices
from kamado.train.dist import DistEnv
from kamado.train.dsconfig import deepspeed_config
from kamado.train.metrics import device_peak_tflops
from kamado.train.schedule import SchedulePlan, resume_plan
from kamado.train.steploop import STOPPED_EXIT_CODE, LoopResult, PendingStep, StepLoop, StepOutput, StopFlag, sum_over_ranks

__all__ = ["STOPPED_EXIT_CODE", "LoopResult", "StopFlag", "Task", "TrainLoop"]


class Task(Protocol):
    name: str

    def batch(self, indices: list[int]) -> dict: ...

    # the extra terms may be device scalars (read at log steps) or floats
    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def val_batches(self, micro_batch: int, limit: int = 8): ...



class TrainLoop(StepLoop):
    """One DeepSpeed engine, one task: `grad_accum` micro-batches per optimizer step."""

    def __init__(self, cfg: TrainConfig, model, task: Task, out_dir: Path, env: DistEnv, device: torch.device,
                 flops_per_token: float = 0.0, identity: dict[str, Any] | None = None, callbacks: list[Callback] | None = None):
        import deepspeed

        super().__init__(cfg, out_dir, env, device, callbacks)
        self.task, self.name, self.plot_title = task, task.name, f"{task.name} loss"
        self.spike_sigma = cfg.spike_sigma
        self.flops_per_token = flops_per_token
        if cfg.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                      betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        # The plan is replaced on resume when max_steps changed (train/schedule.py); a function, not the plan
        # itself, goes to LambdaLR, which would otherwise save the plan's fields and restore them over the new plan.
        self.schedule = SchedulePlan.from_config(cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.schedule(step))
        self.ds_config = deepspeed_config(cfg, env.world_size, task.name)
        if env.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "deepspeed_config.json").write_text(json.dumps(self.ds_config, indent=2))
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        self.ckpt_dir = out_dir / "checkpoints"
        ident = {"world_size": env.world_size, "zero_stage": cfg.zero_stage, **(identity or {})}
        self.checkpoints = CheckpointManager(self.ckpt_dir, cfg.keep_checkpoints, env.rank, ident)
        if cfg.async_checkpoint:  # recipe: <stage>.async_checkpoint
            from kamado.train.async_checkpoint import enable_async_checkpoints

            enable_async_checkpoints(self.engine)
        self.peak_tflops = device_peak_tflops()
        # Zeroes the gradients of a micro-batch whose loss was non-finite on any rank (a device flag, set per
        # micro-batch): a tensor hook runs before the gradient is accumulated and before DeepSpeed's hooks.
        self._keep_grads = torch.ones((), dtype=torch.bool, device=device)
        for p in self.engine.module.parameters():
            if p.requires_grad:
                p.register_hook(self._guard_grad)

    def _guard_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.where(self._keep_grads, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))

    def _to_device(self, batch: dict) -> dict:
        # non_blocking: the prefetching loader pins its batches on CUDA machines, so the copy overlaps compute
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def load_state(self) -> None:
        client = self.checkpoints.load(self.engine)
        if client is None:
            return
        self.step = int(client["step"])
        self.skipped.total = int(client.get("skipped_steps", 0))
        self.schedule, change = resume_plan(client.get("schedule"), self.cfg, self.step)
        if self.env.rank == 0:
            print(f"[kamado] {self.name}: resumed from {self.ckpt_dir / self.checkpoints.loaded_tag} at step {self.step}", flush=True)
            if change:
                print(f"[kamado] {self.name}: {change}", flush=True)

    def save_state(self) -> str:
        client = {"step": self.step, "skipped_steps": self.skipped.total, "schedule": self.schedule.to_dict()}
        return self.checkpoints.save(self.engine, self.step, client)

    def current_lr(self) -> float:
        return self.engine.get_lr()[0]

    def save_in_background(self) -> bool:
        return self.checkpoints.pending is not None

    def commit_save(self) -> None:
        self.checkpoints.finish()

    def validate(self) -> float | None:
        """Mean validation loss over ranks: summed on the device, one all-reduce and one read."""
        self.engine.eval()
        total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
        with torch.no_grad():
            for batch in self.task.val_batches(self.cfg.micro_batch_size, self.cfg.eval_batches):
                loss, _ = self.task.loss(self.engine, self._to_device(batch))
                total, count = total + loss.detach().to(torch.float64), count + 1
        self.engine.train()
        if not count:
            return None
        mean = _as_float32(total / count).reshape(1)
        return (sum_over_ranks(mean, self.env.world_size) / self.env.world_size).item()

    def _agreed_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """A device flag: this micro-batch's loss is finite on every rank (an all-reduce, no read)."""
        bad = sum_over_ranks((~torch.isfinite(loss)).to(torch.float32).reshape(1), self.env.world_size)
        return bad[0] == 0

    def train_step(self) -> StepOutput:
        cfg, env = self.cfg, self.env
        step_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        extra: dict[str, Any] = {}
        n_tokens: Any = 0
        # DeepSpeed skips an update whose gradients are non-finite ("OVERFLOW! Skipping step") and counts it
        skipped_before = getattr(self.engine, "skipped_steps", 0)
        self.engine.train()
        for micro in range(cfg.grad_accum):
            idx = batch_indices(self.step, micro, cfg.grad_accum, env.rank, env.world_size, cfg.micro_batch_size)
            batch = self._to_device(self.task.batch(idx))
            loss, parts = self.task.loss(self.engine, batch)
            self._keep_grads = self._agreed_finite(loss.detach())
            self.engine.backward(loss)
            self.engine.step()
            nonfinite = nonfinite | ~self._keep_grads
            step_loss += loss.detach().to(torch.float64) / cfg.grad_accum
            for k, v in parts.items():
                extra[k] = extra.get(k, 0.0) + torch.as_tensor(v, device=self.device).detach().to(torch.float64) / cfg.grad_accum
            mask = batch.get("attention_mask")
            n_tokens = n_tokens + (mask.sum() if mask is not None else batch["input_ids"].numel())
        self._keep_grads = torch.ones((), dtype=torch.bool, device=self.device)
        # the extra terms and the validation loss pass through float32 before the reduction, as the host floats
        # they were before did (torch.as_tensor of a float): the logged numbers stay the same
        values = {"loss": step_loss, "tokens": n_tokens, **{k: _as_float32(extra[k]) for k in sorted(extra)}}
        return StepOutput(values, nonfinite, getattr(self.engine, "skipped_steps", 0) == skipped_before,
                          self.engine.get_global_grad_norm())

    def record(self, p: PendingStep, values: dict[str, float], grad_norm: float | None, tokens: int) -> dict[str, Any]:
        tok_s = tokens / max(p.host["seconds"], 1e-9)
        tflops = tok_s * self.flops_per_token / 1e12 / self.env.world_size  # per device
        extra = {k: v for k, v in values.items() if k not in ("loss", "tokens")}
        record: dict[str, Any] = {
            "step": p.step, "loss": round(values["loss"], 6) if p.finite else None, "lr": p.host["lr"],
            "grad_norm": grad_norm if p.finite else None,
            "tokens": tokens, "tokens_per_s": round(tok_s, 1), "tflops_per_device": round(tflops, 4),
            "mfu": round(tflops / self.peak_tflops, 4) if self.peak_tflops else None,
            **{k: round(v, 2) for k, v in p.host.items() if k.startswith(("mem_", "max_rss"))},
            "time": p.host["time"], **{k: round(v, 6) for k, v in extra.items()},
        }
        if not p.finite:
            record["skipped_nonfinite"] = True
        if p.val_loss is not None:
            record["val_loss"] = round(p.val_loss, 6)
            record["val_ppl"] = round(math.exp(min(p.val_loss, 50)), 3)
        if "checkpoint_seconds" in p.host:
            record["checkpoint_seconds"] = p.host["checkpoint_seconds"]
        return record

    def console_line(self, m: StepMetrics) -> str:
        extra = " ".join(f"{k}={v:.4f}" for k, v in m.values.items() if k not in ("loss", "tokens"))
        note = " SKIPPED (non-finite loss or gradients)" if not m.finite else (" SPIKE" if m.spike else "")
        val = f" val {m.val_loss:.4f}" if m.val_loss is not None else ""
        mfu = f" MFU {m.record['mfu']:.1%}" if m.record["mfu"] is not None else ""
        return (f"[{self.name}] step {m.step}/{self.cfg.max_steps} loss {m.values['loss']:.4f}{val} lr {m.record['lr']:.2e} "
                f"{m.record['tokens_per_s']:,.0f} tok/s{mfu} {extra}{note}")


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).to(torch.float64)
