"""The one training loop (pretrain, sft, dpo differ only in their task) on DeepSpeed's engine.

Cross-cutting pieces live in their own modules: the DeepSpeed config (dsconfig), the lr schedule (schedule),
checkpoints (checkpoint), metrics (metrics), spikes and non-finite steps (stability). The loop only wires them.

A batch is a pure function of the step (train/data.py), so the step counter in the checkpoint is the loader's
position and a resumed run is bit-identical to a straight one on CPU. A SIGUSR1/SIGTERM sets a flag; all ranks
agree on it every step (an all-reduce), save a checkpoint, write STOPPED.json and exit with STOPPED_EXIT_CODE.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from kamado.durable import write_atomic
from kamado.train.config import TrainConfig
from kamado.train.checkpoint import CheckpointManager
from kamado.train.data import batch_indices
from kamado.train.dist import DistEnv
from kamado.train.dsconfig import deepspeed_config
from kamado.train.metrics import MetricsWriter, device_peak_tflops, memory_mb, plot_loss_curve
from kamado.train.schedule import SchedulePlan, resume_plan
from kamado.train.stability import NonFiniteGuard, SpikeDetector

STOPPED_EXIT_CODE = 3  # checkpointed and stopped (signal or too many non-finite steps); rerun resumes


class Task(Protocol):
    name: str

    def batch(self, indices: list[int]) -> dict: ...

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]: ...

    def val_batches(self, micro_batch: int, limit: int = 8): ...


class StopFlag:
    """SIGUSR1/SIGTERM set `raised`; the loop (or PPO's) checkpoints and stops at the end of the step."""

    def __init__(self) -> None:
        self.raised = False
        self.signal_name: str | None = None  # the first signal this process got, e.g. "SIGUSR1"
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.raised = True
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name


@dataclass
class LoopResult:
    steps: int
    first_loss: float | None
    last_loss: float | None
    val_loss: float | None
    tokens: int
    stopped: str | None  # None, "signal" or "nonfinite"
    skipped_steps: int


class TrainLoop:
    def __init__(self, cfg: TrainConfig, model, task: Task, out_dir: Path, env: DistEnv, device: torch.device,
                 flops_per_token: float = 0.0, identity: dict[str, Any] | None = None):
        import deepspeed

        self.cfg, self.task, self.out_dir, self.env, self.device = cfg, task, out_dir, env, device
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
        self.step = 0
        self.skipped = NonFiniteGuard(cfg.max_nonfinite_in_a_row)
        self.stop = StopFlag()
        self.peak_tflops = device_peak_tflops()
        self.metrics: MetricsWriter | None = None

    # ------------------------------------------------------------ helpers
    def _to_device(self, batch: dict) -> dict:
        # non_blocking: the prefetching loader pins its batches on CUDA machines, so the copy overlaps compute
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _mean_across_ranks(self, values: list) -> list[float]:
        """Floats or device scalars (read here once, in the one all-reduce of the step, not per micro-step)."""
        t = torch.stack([torch.as_tensor(v, device=self.device).to(torch.float64).reshape(()) for v in values])
        dist.all_reduce(t)
        return (t / self.env.world_size).tolist()

    def _all(self, flag) -> bool:
        """`flag` (a bool, or a device bool scalar, read only after the all-reduce) holds on every rank."""
        t = (~torch.as_tensor(flag, device=self.device)).to(torch.float32).reshape(1)
        dist.all_reduce(t)
        return t.item() == 0

    def save(self) -> str:
        if self.metrics is not None:
            self.metrics.sync()  # the records up to this step are on disk before a checkpoint says they happened
        client = {"step": self.step, "skipped_steps": self.skipped.total, "schedule": self.schedule.to_dict()}
        return self.checkpoints.save(self.engine, self.step, client)

    def _write_stopped(self, reason: str) -> None:
        if self.env.rank == 0:
            why: dict[str, Any] = {"reason": reason}
            if reason == "signal":  # rank 0's own signal; "peer" when only another rank got one (all agree to stop)
                why["signal"] = self.stop.signal_name or "peer"
            write_atomic(self.out_dir / "STOPPED.json", json.dumps({**why, "step": self.step}))

    def validate(self) -> float | None:
        self.engine.eval()
        losses = []
        with torch.no_grad():
            for batch in self.task.val_batches(self.cfg.micro_batch_size, self.cfg.eval_batches):
                loss, _ = self.task.loss(self.engine, self._to_device(batch))
                losses.append(loss.item())
        self.engine.train()
        if not losses:
            return None
        return self._mean_across_ranks([sum(losses) / len(losses)])[0]

    def _zero_loss(self) -> torch.Tensor:
        """A loss whose gradient is exactly zero: backpropagated instead of a non-finite one, so every rank still
        runs the same backward and reduction (ZeRO's hooks are collective) and no NaN reaches the weights."""
        return sum((p * 0.0).sum() for p in self.engine.module.parameters() if p.requires_grad)  # type: ignore[return-value]

    # ------------------------------------------------------------ loop
    def run(self) -> LoopResult:
        cfg, env = self.cfg, self.env
        if env.rank == 0:
            (self.out_dir / "STOPPED.json").unlink(missing_ok=True)
        client = self.checkpoints.load(self.engine)
        if client is not None:
            self.step = int(client["step"])
            self.skipped.total = int(client.get("skipped_steps", 0))
            self.schedule, change = resume_plan(client.get("schedule"), cfg, self.step)
            if env.rank == 0:
                print(f"[kamado] {self.task.name}: resumed from {self.ckpt_dir / self.checkpoints.loaded_tag} at step {self.step}", flush=True)
                if change:
                    print(f"[kamado] {self.task.name}: {change}", flush=True)
        metrics = self.metrics = MetricsWriter(self.out_dir, env.rank == 0, resume_step=self.step)
        spikes = SpikeDetector(cfg.spike_sigma)
        first_loss = last_loss = None
        tokens_total = 0
        stopped: str | None = None
        self.engine.train()
        t_last = time.time()
        while self.step < cfg.max_steps:
            # the loss and token count stay on the device until the step's all-reduce (no host read per micro-step)
            step_loss, extra, n_tokens, finite = torch.zeros((), dtype=torch.float64, device=self.device), {}, 0, True
            # DeepSpeed skips an update whose gradients are non-finite ("OVERFLOW! Skipping step") and counts it
            skipped_before = getattr(self.engine, "skipped_steps", 0)
            for micro in range(cfg.grad_accum):
                idx = batch_indices(self.step, micro, cfg.grad_accum, env.rank, env.world_size, cfg.micro_batch_size)
                batch = self._to_device(self.task.batch(idx))
                loss, parts = self.task.loss(self.engine, batch)
                micro_finite = self._all(torch.isfinite(loss.detach()))  # one host read: the all-reduced flag
                finite = finite and micro_finite
                self.engine.backward(loss if micro_finite else self._zero_loss())
                self.engine.step()
                step_loss += loss.detach().to(torch.float64) / cfg.grad_accum
                for k, v in parts.items():
                    extra[k] = extra.get(k, 0.0) + v / cfg.grad_accum
                mask = batch.get("attention_mask")
                n_tokens = n_tokens + (mask.sum() if mask is not None else batch["input_ids"].numel())
            self.step += 1
            finite = finite and getattr(self.engine, "skipped_steps", 0) == skipped_before
            self.skipped.record(finite)
            keys = sorted(extra)
            reduced = self._mean_across_ranks([step_loss, n_tokens, *[extra[k] for k in keys]])
            loss_all, extra = reduced[0], dict(zip(keys, reduced[2:]))
            step_tokens = int(round(reduced[1] * env.world_size))
            tokens_total += step_tokens
            if first_loss is None:
                first_loss = loss_all
            last_loss = loss_all if finite else last_loss
            spike = spikes(loss_all) if finite else False
            now = time.time()  # before validation: tokens/s measures this step's training only
            val_loss = self.validate() if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps else None
            if env.rank == 0:
                tok_s = step_tokens / max(now - t_last, 1e-9)
                tflops = tok_s * self.flops_per_token / 1e12 / env.world_size  # per device
                record: dict[str, Any] = {
                    "step": self.step, "loss": round(loss_all, 6) if finite else None, "lr": self.engine.get_lr()[0],
                    "grad_norm": _as_float(self.engine.get_global_grad_norm()) if finite else None,
                    "tokens": step_tokens, "tokens_per_s": round(tok_s, 1), "tflops_per_device": round(tflops, 4),
                    "mfu": round(tflops / self.peak_tflops, 4) if self.peak_tflops else None,
                    **{k: round(v, 2) for k, v in memory_mb(self.device).items()},
                    "time": now, **{k: round(v, 6) for k, v in extra.items()},
                }
                if not finite:
                    record["skipped_nonfinite"] = True
                if spike:
                    record["spike"] = True
                if val_loss is not None:
                    record["val_loss"] = round(val_loss, 6)
                    record["val_ppl"] = round(math.exp(min(val_loss, 50)), 3)
                metrics.write(record)
                if not finite or spike or val_loss is not None or self.step % cfg.log_every == 0 or self.step in (1, cfg.max_steps):
                    shown = " ".join(f"{k}={v:.4f}" for k, v in extra.items())
                    note = " SKIPPED (non-finite loss or gradients)" if not finite else (" SPIKE" if spike else "")
                    val = f" val {val_loss:.4f}" if val_loss is not None else ""
                    mfu = f" MFU {record['mfu']:.1%}" if record["mfu"] is not None else ""
                    print(f"[{self.task.name}] step {self.step}/{cfg.max_steps} loss {loss_all:.4f}{val} lr {record['lr']:.2e} "
                          f"{tok_s:,.0f} tok/s{mfu} {shown}{note}", flush=True)
            t_last = time.time() if val_loss is not None else now
            if self.skipped.exhausted:
                stopped = "nonfinite"
            elif not self._all(not self.stop.raised):  # any rank signalled
                stopped = "signal"
            if stopped:
                self.save()
                self._write_stopped(stopped)
                if env.rank == 0:
                    print(f"[kamado] {self.task.name}: stopped ({stopped}) at step {self.step}; checkpoint saved", flush=True)
                break
            if self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                self.save()
                t_last = time.time()  # the next step's tokens/s measures training, not the save
        if not stopped:
            self.save()
        final_val = None if stopped else self.validate()
        if env.rank == 0:
            if final_val is not None:
                metrics.write({"step": self.step, "val_loss": round(final_val, 6), "val_ppl": round(math.exp(min(final_val, 50)), 3),
                               "final": True})
            metrics.close()
            plot_loss_curve(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png", f"{self.task.name} loss")
        return LoopResult(self.step, first_loss, last_loss, final_val, tokens_total, stopped, self.skipped.total)


def _as_float(x) -> float | None:
    if x is None:
        return None
    return float(x.item() if isinstance(x, torch.Tensor) else x)
