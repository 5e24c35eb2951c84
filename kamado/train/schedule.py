"""Learning-rate schedules as multipliers of the peak lr (a LambdaLR, whose step DeepSpeed checkpoints), and what
they do when a run is resumed with another `max_steps` (the usual case: raising it to train on).

cosine: linear warmup, cosine decay to `min_lr_ratio` at `max_steps`.
wsd (warmup-stable-decay, MiniCPM / llm-jp v4 style): linear warmup, flat, linear decay to `min_lr_ratio` over the
last `decay_fraction` of the steps.

Changing `max_steps` on resume (the plan each checkpoint was trained under is saved in it, so this is decided from
the checkpoint, not guessed from the config):
- Resumed before anything decayed (cosine: still in warmup; wsd: still warming up or in the stable phase): the plan
  becomes the one a fresh run with the new `max_steps` has. WSD's decay moves to the new end, and the extended run
  is step for step the run that had been planned with the larger `max_steps` from the start.
- Resumed after the decay had begun (any cosine run past warmup, a wsd run in its decay, a finished run): the
  decay is re-stretched from the lr the run had reached down to `min_lr_ratio` at the new end — the rest of a
  half-cosine for cosine, a straight line for wsd. The lr never jumps up and is never warmed again: a finished run
  (already at the floor) trains on at the floor. If you want a wsd run to decay from the stable lr again, resume
  from a stable-phase checkpoint instead (delete the later ones).

Why re-stretch rather than refuse: torchtitan and OLMo-core both train on when the step budget grows, by evaluating
their schedule at the new length (torchtitan rebuilds the LambdaLR from `training.steps`, OLMo-core passes the
trainer's `max_steps` to `Scheduler.get_lr`). Taken literally, that jumps a cosine run's lr back up at the resume
step (300 → 600 steps at step 300: from 0.1 to 0.55 of the peak, with no warmup) — a loss spike for no benefit.
kamado keeps their behaviour for the steps ahead and re-plans only what is still to come, from where the lr is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from kamado.train.config import TrainConfig

SCHEDULES = ("cosine", "wsd")


class ScheduleMismatch(ValueError):
    pass


@dataclass(frozen=True)
class SchedulePlan:
    kind: str  # cosine | wsd
    warmup: int
    max_steps: int
    floor: float  # min_lr_ratio
    decay_fraction: float  # wsd only
    # Set when max_steps changed after the decay had begun: from `from_step` on, the multiplier goes from
    # `from_multiplier` down to `floor` at `max_steps` (cosine: half-cosine, wsd: straight line).
    from_step: int | None = None
    from_multiplier: float | None = None

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> SchedulePlan:
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"schedule: {cfg.schedule!r} is not one of {', '.join(SCHEDULES)}")
        return cls(cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio, cfg.decay_fraction)

    @property
    def decay_start(self) -> int:
        """The first step whose multiplier is below the peak (after warmup)."""
        if self.kind == "cosine":
            return self.warmup
        return max(self.warmup, int(round(self.max_steps * (1 - self.decay_fraction))))

    def __call__(self, step: int) -> float:
        if self.from_step is not None and step >= self.from_step:
            progress = min(1.0, (step - self.from_step) / max(1, self.max_steps - self.from_step))
            return self.floor + (self.from_multiplier - self.floor) * _shape(self.kind, progress)  # type: ignore[operator]
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        start = self.decay_start
        if step < start:
            return 1.0
        progress = min(1.0, (step - start) / max(1, self.max_steps - start))
        return self.floor + (1 - self.floor) * _shape(self.kind, progress)

    def resumed(self, step: int, max_steps: int) -> SchedulePlan:
        """This plan (saved in a checkpoint at `step`) for a run that now ends at `max_steps`."""
        if max_steps == self.max_steps:
            return self
        fresh = replace(self, max_steps=max_steps)  # the plan of a run planned with max_steps from the start
        if self.from_step is None and step <= min(self.decay_start, fresh.decay_start):
            return fresh  # nothing has decayed yet, nor would have under the new plan
        return replace(self, max_steps=max_steps, from_step=step, from_multiplier=self(step))

    def describe_change(self, old: SchedulePlan, step: int) -> str:
        if self.from_step is None:
            return (f"{self.kind} schedule re-planned for max_steps {old.max_steps} -> {self.max_steps} at step {step} "
                    f"(nothing had decayed yet: the same as a run planned with {self.max_steps} steps)")
        return (f"{self.kind} schedule: max_steps {old.max_steps} -> {self.max_steps} at step {step}, after the decay "
                f"had begun: the lr multiplier goes on from {self.from_multiplier:.4g} down to {self.floor:.4g} at step "
                f"{self.max_steps} (re-stretched, no jump)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchedulePlan:
        return cls(**data)


def _shape(kind: str, progress: float) -> float:
    """1 → 0 as progress goes 0 → 1."""
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - progress


def resume_plan(saved: dict[str, Any] | None, cfg: TrainConfig, step: int) -> tuple[SchedulePlan, str | None]:
    """The plan to train on after resuming at `step`, and a note when it differs from the checkpoint's."""
    current = SchedulePlan.from_config(cfg)
    if saved is None:  # a checkpoint from before plans were saved: it was trained under the config's plan
        return current, None
    old = SchedulePlan.from_dict(saved)
    if (old.kind, old.warmup, old.floor, old.decay_fraction) != (current.kind, current.warmup, current.floor, current.decay_fraction):
        raise ScheduleMismatch(
            f"the checkpoint at step {step} was trained with schedule={old.kind}, warmup_steps={old.warmup}, "
            f"min_lr_ratio={old.floor}, decay_fraction={old.decay_fraction}; this run has schedule={current.kind}, "
            f"warmup_steps={current.warmup}, min_lr_ratio={current.floor}, decay_fraction={current.decay_fraction}. "
            f"Only max_steps may change on resume")
    plan = old.resumed(step, cfg.max_steps)
    return plan, (None if plan is old else plan.describe_change(old, step))


def lr_multiplier(cfg: TrainConfig) -> Callable[[int], float]:
    """The config's plan as a plain function: LambdaLR saves (and on load restores) the attributes of a callable
    object, which would bring an old plan back over a re-planned one; a function carries no state."""
    plan = SchedulePlan.from_config(cfg)
    return lambda step: plan(step)
