"""The training loop: step mechanics, stop agreement and checkpoints. `StepLoop` is the loop every training
stage runs; `TrainLoop` is its DeepSpeed step for pretrain, sft, dpo and reward (they differ only in their task);
PPO/GRPO (finetune/ppo.py) plug a rollout step into the same StepLoop. Reporting (console, metrics.jsonl,
TensorBoard, spikes, the loss plot) is callbacks (train/callbacks.py); the lr schedule, the DeepSpeed config,
checkpoints and the non-finite count have modules of their own.

A batch is a pure function of the step (train/data.py), so the step counter in the checkpoint is the loader's
position and a resumed run is bit-identical to a straight one on CPU. A SIGUSR1/SIGTERM sets a flag; the ranks
agree on it every step, save a checkpoint, write STOPPED.json and exit with STOPPED_EXIT_CODE.

Host–device syncs: a step's metrics (loss, tokens, the task's extra terms, the grad norm) stay on the device
until a log step (or an evaluation, a checkpoint, a stop, the end), where one all-reduce and one read bring every
pending step back and the callbacks get one record per step. A step that does not log reads the device once: the
agreement, in one all-reduce, on whether any rank had a non-finite loss in the step and whether any rank was
signalled. The per-micro-batch decision to skip a non-finite loss stays on the device: its finite flag is agreed
by an all-reduce (no read), and a gradient hook zeroes that micro-batch's gradients with torch.where (NaN does
not survive it), which is what backpropagating a zero loss did before.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from kamado.durable import write_atomic
from kamado.train.callbacks import Callback, StepMetrics, default_callbacks
from kamado.train.checkpoint import CheckpointManager
from kamado.train.config import TrainConfig
from kamado.train.data import batch_indices
from kamado.train.dist import DistEnv
from kamado.train.dsconfig import deepspeed_config
from kamado.train.metrics import device_peak_tflops, memory_mb
from kamado.train.schedule import SchedulePlan, resume_plan
from kamado.train.stability import NonFiniteGuard

STOPPED_EXIT_CODE = 3  # checkpointed and stopped (signal or too many non-finite steps); rerun resumes


class Task(Protocol):
    name: str

    def batch(self, indices: list[int]) -> dict: ...

    # the extra terms may be device scalars (read at log steps) or floats
    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def val_batches(self, micro_batch: int, limit: int = 8): ...


class StopFlag:
    """SIGUSR1/SIGTERM set `raised`; the loop checkpoints and stops at the end of the step."""

    def __init__(self) -> None:
        self.raised = False
        self.signal_name: str | None = None  # the first signal this process got, e.g. "SIGUSR1"
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.raised = True
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name


# Every collective here reduces a tensor on the rank's device: NCCL rejects CPU tensors.
def any_rank(flags: list, device, world_size: int) -> list[bool]:
    """For each flag (a bool, or a device scalar: nonzero = raised), whether it is raised on any rank: one
    all-reduce and one read, which is a step's only host–device sync when it does not log."""
    t = torch.stack([torch.as_tensor(f, device=device).to(torch.float32).reshape(()) for f in flags])
    if world_size > 1:
        dist.all_reduce(t)
    return [v > 0 for v in t.tolist()]


def sum_over_ranks(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """The sum over ranks of a device tensor, left on the device (no read)."""
    if world_size > 1:
        dist.all_reduce(t)
    return t


@dataclass
class LoopResult:
    steps: int
    first_loss: float | None
    last_loss: float | None
    val_loss: float | None
    tokens: int
    stopped: str | None  # None, "signal" or "nonfinite"
    skipped_steps: int
    checkpoint_seconds: list[float] = field(default_factory=list)  # wall time of each save, in order


@dataclass
class StepOutput:
    """What a step hands the loop: `values` are this rank's (device scalars or floats; logged as the mean over
    ranks; "loss" and "tokens" first), `nonfinite` a device flag already agreed across ranks."""

    values: dict[str, Any]
    nonfinite: torch.Tensor | bool = False
    host_finite: bool = True  # what the host knows already (DeepSpeed skipped an fp16 overflow step)
    grad_norm: Any = None  # the global norm (device scalar, float or None): the same on every rank, not averaged


@dataclass
class PendingStep:
    """A finished step whose numbers are still on the device."""

    step: int
    keys: tuple[str, ...]
    vector: torch.Tensor  # float64, this rank's values
    grad_norm: Any
    finite: bool
    host: dict[str, Any]  # lr, time, seconds (this step's training time), memory, checkpoint_seconds
    val_loss: float | None = None


class StepLoop:
    """The loop: resume, steps, stop agreement, log-step reductions, checkpoints, the end. A subclass provides
    `train_step`, `save_state`, `load_state`, `record` and `console_line` (and `validate` if it has one)."""

    name = "train"
    plot_title = "loss"
    spike_sigma: float | None = None

    def __init__(self, cfg, out_dir: Path, env: DistEnv, device: torch.device, callbacks: list[Callback] | None = None):
        self.cfg, self.out_dir, self.env, self.device = cfg, out_dir, env, device
        self.callbacks = callbacks
        self.step = 0
        self.skipped = NonFiniteGuard(cfg.max_nonfinite_in_a_row)
        self.stop = StopFlag()
        self.pending: list[PendingStep] = []
        self.checkpoint_seconds: list[float] = []
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.tokens_total = 0
        self._unlogged_save: float | None = None  # seconds of a save the next step's record reports

    # ------------------------------------------------------------ what a subclass provides
    def train_step(self) -> StepOutput:
        raise NotImplementedError

    def save_state(self) -> str:
        raise NotImplementedError

    def load_state(self) -> None:
        """Resume from the newest complete checkpoint, if any (sets self.step)."""
        raise NotImplementedError

    def current_lr(self) -> float:
        raise NotImplementedError

    def record(self, p: PendingStep, values: dict[str, float], grad_norm: float | None, tokens: int) -> dict[str, Any]:
        raise NotImplementedError

    def console_line(self, m: StepMetrics) -> str:
        raise NotImplementedError

    def validate(self) -> float | None:
        return None

    # ------------------------------------------------------------ shared mechanics
    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks or ():
            getattr(cb, hook)(self, *args)

    def is_log_step(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step in (1, self.cfg.max_steps)

    def save(self) -> str:
        self._emit("before_checkpoint")  # the records up to this step are on disk before a checkpoint says they happened
        start = time.perf_counter()
        tag = self.save_state()
        seconds = time.perf_counter() - start
        self.checkpoint_seconds.append(round(seconds, 3))
        self._unlogged_save = seconds
        self._emit("on_checkpoint", tag, seconds)
        return tag

    def _write_stopped(self, reason: str) -> None:
        if self.env.rank == 0:
            why: dict[str, Any] = {"reason": reason}
            if reason == "signal":  # rank 0's own signal; "peer" when only another rank got one (all agree to stop)
                why["signal"] = self.stop.signal_name or "peer"
            write_atomic(self.out_dir / "STOPPED.json", json.dumps({**why, "step": self.step}))

    def _queue(self, out: StepOutput, finite: bool, now: float, seconds: float) -> None:
        vector = torch.stack([torch.as_tensor(v, device=self.device).detach().to(torch.float64).reshape(())
                              for v in out.values.values()])
        host = {"lr": self.current_lr(), "time": now, "seconds": seconds, **memory_mb(self.device)}
        if self._unlogged_save is not None:
            host["checkpoint_seconds"] = round(self._unlogged_save, 3)
            self._unlogged_save = None
        norm = out.grad_norm.detach().clone() if isinstance(out.grad_norm, torch.Tensor) else out.grad_norm
        self.pending.append(PendingStep(self.step, tuple(out.values), vector, norm, finite, host))

    def flush(self) -> None:
        """Bring every pending step's numbers to the host (one all-reduce and one read per group of steps with
        the same keys, normally one) and hand each step's record to the callbacks, in step order."""
        pending, self.pending = self.pending, []
        world = self.env.world_size
        for keys, run in groupby(pending, key=lambda p: p.keys):
            steps = list(run)
            means = sum_over_ranks(torch.stack([p.vector for p in steps]), world) / world
            norms = torch.stack([_norm_tensor(p.grad_norm, self.device) for p in steps])
            for p, row in zip(steps, torch.cat([means, norms.unsqueeze(1)], 1).tolist()):
                self._report(p, dict(zip(keys, row[:-1])), row[-1] if p.grad_norm is not None else None)

    def _report(self, p: PendingStep, values: dict[str, float], grad_norm: float | None) -> None:
        loss = values.get("loss")
        if self.first_loss is None:
            self.first_loss = loss
        if p.finite:
            self.last_loss = loss
        tokens = int(round(values.get("tokens", 0.0) * self.env.world_size))
        self.tokens_total += tokens
        if not self.callbacks:
            return
        m = StepMetrics(p.step, values, p.finite, p.val_loss, self.record(p, values, grad_norm, tokens),
                        log_step=self.is_log_step(p.step), line=self.console_line)
        self._emit("on_step", m)

    def run(self) -> LoopResult:
        cfg, env = self.cfg, self.env
        if env.rank == 0:
            (self.out_dir / "STOPPED.json").unlink(missing_ok=True)
        self.load_state()
        if self.callbacks is None:
            self.callbacks = default_callbacks(self.name, self.out_dir, self.plot_title, self.spike_sigma) if env.rank == 0 else []
        self._emit("on_start")
        stopped: str | None = None
        t_last = time.time()
        while self.step < cfg.max_steps:
            out = self.train_step()
            self.step += 1
            # the step's one host read: did any rank have a non-finite loss, was any rank signalled
            nonfinite, signalled = any_rank([out.nonfinite, self.stop.raised], self.device, env.world_size)
            finite = out.host_finite and not nonfinite
            self.skipped.record(finite)
            now = time.time()  # before validation: tokens/s measures this step's training only
            self._queue(out, finite, now, now - t_last)
            evaluate = bool(cfg.eval_every) and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps
            if evaluate:
                self.pending[-1].val_loss = self.validate()
            t_last = time.time() if evaluate else now
            if self.skipped.exhausted:
                stopped = "nonfinite"
            elif signalled:
                stopped = "signal"
            checkpoint = not stopped and self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps
            if stopped or checkpoint or evaluate or self.is_log_step(self.step):
                self.flush()
            if stopped:
                self.save()
                self._write_stopped(stopped)
                if env.rank == 0:
                    print(f"[kamado] {self.name}: stopped ({stopped}) at step {self.step}; checkpoint saved", flush=True)
                break
            if checkpoint:
                self.save()
                t_last = time.time()  # the next step's tokens/s measures training, not the save
        if not stopped:
            self.flush()
            self.save()
        final_val = None if stopped else self.validate()
        if final_val is not None:
            self._emit("on_eval", self.step, final_val)
        result = LoopResult(self.step, self.first_loss, self.last_loss, final_val, self.tokens_total, stopped,
                            self.skipped.total, self.checkpoint_seconds)
        self._emit("on_end", result)
        return result


def _norm_tensor(norm, device) -> torch.Tensor:
    if isinstance(norm, torch.Tensor):
        return norm.to(device=device, dtype=torch.float64).reshape(())
    return torch.tensor(0.0 if norm is None else float(norm), dtype=torch.float64, device=device)


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
        return (sum_over_ranks((total / count).reshape(1), self.env.world_size) / self.env.world_size).item()

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
        values = {"loss": step_loss, "tokens": n_tokens, **{k: extra[k] for k in sorted(extra)}}
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
