"""The loop every training stage runs: resume, steps, the stop agreement, log-step reductions of the metrics,
checkpoints (with their save time), the end. A stage provides the step: train/loop.py's TrainLoop (one DeepSpeed
engine and a task: pretrain, sft, dpo, reward) or finetune/ppo.py's rollout step (PPO/GRPO).

A SIGUSR1/SIGTERM sets a flag; the ranks agree on it (see below), save a checkpoint, write STOPPED.json and exit
with STOPPED_EXIT_CODE; so does a run after `max_nonfinite_in_a_row` skipped steps in a row.

Checkpoints: each save's time (what training waited for) goes to the console, the next step's record
(`checkpoint_seconds`) and the result. A step may save in the background (TrainLoop with `async_checkpoint`,
train/async_checkpoint.py): the save is committed (manifest, rename, `latest`) at the next log step, the next save,
a stop or the end, on every rank at the same step.

Host–device syncs: a step's metrics stay on the device until a log step (or an evaluation, a checkpoint, a stop,
the end), where one all-reduce and one read bring every pending step back and the callbacks
(train/callbacks.py) get one record per step. Each step's agreement (whether any rank had a non-finite loss in
the step, whether any rank was signalled) is one all-reduce of a device tensor issued right after the step, on
CUDA copied to pinned host memory without waiting (an `Agreement`). A step that does not log reads nothing of its
own: its agreement is read after the next step has been issued, so on a GPU the host queues step N+1 while step N
runs and reads step N's two flags once they are there. Where the loop reads anyway (a log, evaluation or
checkpoint step, a stop, the last step) the step's own agreement is read at once. What the one-step lag means:
- a signal that reaches the agreement of a quiet step N stops the run after step N+1 (at N itself when N logs,
  evaluates or checkpoints). Every rank reads the same agreed flags at the same step, so the ranks still stop
  together; the checkpoint and STOPPED.json name the step stopped at, and a rerun resumes exactly from there;
- a step's `finite` (in its record) is settled when its agreement is read, always before its record is made;
- the NonFiniteGuard counts each step when its agreement is read: an exhausted guard stops the run one step
  later than the step that exhausted it when that step was quiet (that extra step, if non-finite too, is skipped
  like the others and counted).
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from kamado.durable import write_atomic
from kamado.train.callbacks import Callback, StepMetrics, default_callbacks
from kamado.train.dist import DistEnv
from kamado.train.metrics import memory_mb
from kamado.train.stability import NonFiniteGuard

STOPPED_EXIT_CODE = 3  # checkpointed and stopped (signal or too many non-finite steps); rerun resumes


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
class Agreement:
    """Whether each flag (a bool, or a device scalar: nonzero = raised) is raised on any rank, issued now and read
    later. Issuing waits for nothing: one all-reduce of a device tensor (a bool is filled in on the device, no
    host-to-device copy) and, on CUDA, a non-blocking copy into pinned host memory with an event recorded after
    it. `read()` waits for that event only, so work queued on the device after the agreement keeps running."""

    def __init__(self, flags: list, device: torch.device, world_size: int, step: int = 0):
        self.step = step  # the step whose flags these are (0 for none)
        t = torch.zeros(len(flags), dtype=torch.float32, device=device)
        for i, flag in enumerate(flags):
            t[i] = flag
        t = sum_over_ranks(t, world_size)
        self._ready: torch.cuda.Event | None = None
        if t.device.type == "cuda":
            self._host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self._host.copy_(t, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:  # on the CPU it is there already (gloo's all-reduce returned when done); another device reads at read()
            self._host = t
        self._flags: list[bool] | None = None

    def read(self) -> list[bool]:
        """The agreed flags (the host read: waits for the agreement's own copy, once)."""
        if self._flags is None:
            if self._ready is not None:
                self._ready.synchronize()
            self._flags = [v > 0 for v in self._host.tolist()]
        return self._flags


def any_rank(flags: list, device, world_size: int) -> list[bool]:
    """For each flag, whether it is raised on any rank: an Agreement read at once."""
    return Agreement(flags, device, world_size).read()


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
    host: dict[str, Any] = field(default_factory=dict)  # host numbers for the record (PPO's KL coefficient)


@dataclass
class PendingStep:
    """A finished step whose numbers are still on the device."""

    step: int
    keys: tuple[str, ...]
    vector: torch.Tensor  # float64, this rank's values
    grad_norm: Any
    finite: bool  # what the host knew (StepOutput.host_finite) until the agreement is read, then the step's verdict
    agreement: Agreement | None  # [non-finite on any rank, signalled on any rank]; None once read (`_settle`)
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
        self._saving: tuple[str, float] | None = None  # (tag, seconds so far) of a save not yet committed

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

    def save_in_background(self) -> bool:
        """Whether the save just made is still being written (committed later by `commit_save`)."""
        return False

    def commit_save(self) -> None:
        pass

    # ------------------------------------------------------------ shared mechanics
    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks or ():
            getattr(cb, hook)(self, *args)

    def is_log_step(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step in (1, self.cfg.max_steps)

    def save(self) -> str:
        self.finish_save()  # one save at a time
        self._emit("before_checkpoint")  # the records up to this step are on disk before a checkpoint says they happened
        start = time.perf_counter()
        tag = self.save_state()
        self._saving = (tag, time.perf_counter() - start)
        if not self.save_in_background():
            self.finish_save()
        return tag

    def finish_save(self) -> bool:
        """Commit the save in progress, if any (every rank, at the same step). Its time is what training waited
        for: the whole save, or for a background one its copy to host memory plus what is left of the write here."""
        if self._saving is None:
            return False
        tag, seconds = self._saving
        self._saving = None
        start = time.perf_counter()
        self.commit_save()
        seconds += time.perf_counter() - start
        self.checkpoint_seconds.append(round(seconds, 3))
        self._unlogged_save = seconds
        self._emit("on_checkpoint", tag, seconds)
        return True

    def _write_stopped(self, reason: str) -> None:
        if self.env.rank == 0:
            why: dict[str, Any] = {"reason": reason}
            if reason == "signal":  # rank 0's own signal; "peer" when only another rank got one (all agree to stop)
                why["signal"] = self.stop.signal_name or "peer"
            write_atomic(self.out_dir / "STOPPED.json", json.dumps({**why, "step": self.step}))

    def _queue(self, out: StepOutput, agreement: Agreement) -> PendingStep:
        """The step, pending: its values on the device, its agreement on its way; `time` and `seconds` are set
        by the loop once the step's reads (if any) are done."""
        vector = torch.stack([torch.as_tensor(v, device=self.device).detach().to(torch.float64).reshape(())
                              for v in out.values.values()])
        host = {"lr": self.current_lr(), **memory_mb(self.device), **out.host}
        if self._unlogged_save is not None:
            host["checkpoint_seconds"] = round(self._unlogged_save, 3)
            self._unlogged_save = None
        norm = out.grad_norm.detach().clone() if isinstance(out.grad_norm, torch.Tensor) else out.grad_norm
        p = PendingStep(self.step, tuple(out.values), vector, norm, out.host_finite, agreement, host)
        self.pending.append(p)
        return p

    def _settle(self, p: PendingStep) -> str | None:
        """Read step p's agreement: settle `p.finite`, count it in the guard; the reason to stop it gives, if any."""
        nonfinite, signalled = p.agreement.read()
        p.finite, p.agreement = p.finite and not nonfinite, None
        self.skipped.record(p.finite)
        return "nonfinite" if self.skipped.exhausted else "signal" if signalled else None

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
        assert p.agreement is None, f"step {p.step} reported before its agreement was read"
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
        lagging: PendingStep | None = None  # a quiet step whose agreement is read once the next step is issued
        while self.step < cfg.max_steps:
            out = self.train_step()
            self.step += 1
            current = self._queue(out, Agreement([out.nonfinite, self.stop.raised], self.device, env.world_size,
                                                 self.step))
            if lagging is not None:  # the previous step's agreement: this step is queued behind it, nothing idles
                stopped, lagging = self._settle(lagging), None
            evaluate = bool(cfg.eval_every) and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps
            checkpoint = self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps
            reads = bool(stopped) or checkpoint or evaluate or self.is_log_step(self.step)  # the last step logs
            if reads:  # the loop reads the device here anyway: this step's agreement too, with no lag
                reason = self._settle(current)
                stopped = stopped or reason
            else:
                lagging = current
            now = time.time()  # after the step's reads, before validation: tokens/s measures training only
            current.host.update(time=now, seconds=now - t_last)
            if evaluate:
                current.val_loss = self.validate()
            t_last = time.time() if evaluate else now
            checkpoint = checkpoint and not stopped
            if reads:
                if self.finish_save():  # a background save has had the steps since it began to finish writing
                    t_last = time.time()  # the next step's tokens/s measures training, not the wait
                self.flush()
            if stopped:
                self.save()
                self.finish_save()
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
            self.finish_save()
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
