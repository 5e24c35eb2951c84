"""Learning-rate schedules as multipliers of the peak lr (a LambdaLR, whose state DeepSpeed checkpoints)."""

from __future__ import annotations

import math
from typing import Callable

from kamado.recipe import TrainConfig


def lr_multiplier(cfg: TrainConfig) -> Callable[[int], float]:
    """cosine: linear warmup, cosine decay to min_lr_ratio at max_steps.
    wsd (warmup-stable-decay, MiniCPM / llm-jp v4 style): linear warmup, flat, linear decay over the last
    `decay_fraction` of the steps — a run can be extended from any stable-phase checkpoint."""
    warmup, total, floor = cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio
    decay_start = max(warmup, int(round(total * (1 - cfg.decay_fraction))))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def wsd(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        return 1.0 - (1 - floor) * progress

    return {"cosine": cosine, "wsd": wsd}[cfg.schedule]
