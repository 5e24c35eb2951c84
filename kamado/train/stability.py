"""Loss-spike detection (logged) and the count of non-finite steps (skipped, then the run stops)."""

from __future__ import annotations

import math
from collections import deque


class SpikeDetector:
    """A loss more than `sigma` standard deviations above the mean of the last `window` losses is a spike."""

    def __init__(self, sigma: float, window: int = 50, warmup: int = 20):
        self.sigma, self.warmup = sigma, warmup
        self.recent: deque[float] = deque(maxlen=window)

    def __call__(self, loss: float) -> bool:
        spike = False
        if len(self.recent) >= self.warmup:
            mean = sum(self.recent) / len(self.recent)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / len(self.recent))
            spike = loss > mean + self.sigma * max(std, 1e-6)
        if math.isfinite(loss):
            self.recent.append(loss)
        return spike


class NonFiniteGuard:
    """Counts skipped steps; `exhausted` once `limit` come in a row. The loop records each step when it reads the
    step's agreement across ranks: on a step that does not log that is after the next step has been issued
    (train/steploop.py), so an exhausted guard stops the run one step later than the step that exhausted it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0
        self.total = 0

    def record(self, finite: bool) -> None:
        if finite:
            self.in_a_row = 0
        else:
            self.in_a_row += 1
            self.total += 1

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.in_a_row >= self.limit
