"""What a training loop reports, as callbacks (the OLMo-core / torchtitan split): the loop runs steps, agrees on
stops and saves checkpoints; the console, metrics.jsonl, TensorBoard, spike detection and the loss plot listen.

Callbacks run on rank 0 only and see host numbers: the loop keeps a step's metrics on the device and reduces
them across ranks at log steps (and before an evaluation, a checkpoint, a stop and the end), then calls
`on_step` once per step in step order, so every step still gets its record. A callback that changes a record
(spike detection) must come before the writers: `default_callbacks` orders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kamado.train.metrics import MetricsWriter, TensorBoardWriter, plot_loss_curve
from kamado.train.stability import SpikeDetector


@dataclass
class StepMetrics:
    """One step's numbers on the host, after the reduction across ranks."""

    step: int
    values: dict[str, float]  # means over ranks (loss, tokens, the task's extra terms, ...), unrounded
    finite: bool  # False: a non-finite loss or gradient skipped the update
    val_loss: float | None
    record: dict[str, Any]  # the metrics.jsonl record (rounded); callbacks may add keys
    log_step: bool = False  # every log_every-th step, the first and the last
    spike: bool = False
    line: Callable[["StepMetrics"], str] | None = None  # the console line, the loop's own format

    @property
    def logs(self) -> bool:
        """Whether the console shows this step: log steps and anything unusual."""
        return self.log_step or not self.finite or self.spike or self.val_loss is not None


class Callback:
    def on_start(self, loop) -> None:  # after a resume: loop.step is where training starts
        pass

    def on_step(self, loop, m: StepMetrics) -> None:
        pass

    def on_eval(self, loop, step: int, val_loss: float) -> None:  # the end-of-run validation
        pass

    def before_checkpoint(self, loop) -> None:  # records so far must be durable before a checkpoint covers them
        pass

    def on_checkpoint(self, loop, tag: str, seconds: float) -> None:
        pass

    def on_end(self, loop, result) -> None:
        pass


class SpikeCheck(Callback):
    def __init__(self, sigma: float):
        self.detector = SpikeDetector(sigma)

    def on_step(self, loop, m: StepMetrics) -> None:
        if m.finite and self.detector(m.values["loss"]):
            m.spike = m.record["spike"] = True


class MetricsFile(Callback):
    """metrics.jsonl: one record per step, trimmed to the resume step when a run resumes."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.writer: MetricsWriter | None = None

    def on_start(self, loop) -> None:
        self.writer = MetricsWriter(self.out_dir, True, resume_step=loop.step, tensorboard=False)

    def on_step(self, loop, m: StepMetrics) -> None:
        self.writer.write(m.record)

    def on_eval(self, loop, step: int, val_loss: float) -> None:
        self.writer.write(final_val_record(step, val_loss))

    def before_checkpoint(self, loop) -> None:
        self.writer.sync()

    def on_end(self, loop, result) -> None:
        self.writer.close()


class TensorBoard(Callback):
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.writer: TensorBoardWriter | None = None

    def on_start(self, loop) -> None:
        self.writer = TensorBoardWriter(self.out_dir, loop.step)

    def on_step(self, loop, m: StepMetrics) -> None:
        self.writer.write(m.record)

    def on_eval(self, loop, step: int, val_loss: float) -> None:
        self.writer.write(final_val_record(step, val_loss))

    def before_checkpoint(self, loop) -> None:
        self.writer.flush()

    def on_end(self, loop, result) -> None:
        self.writer.close()


class Console(Callback):
    def __init__(self, name: str):
        self.name = name

    def on_step(self, loop, m: StepMetrics) -> None:
        if m.logs and m.line is not None:
            print(m.line(m), flush=True)

    def on_checkpoint(self, loop, tag: str, seconds: float) -> None:
        print(f"[kamado] {self.name}: checkpoint {tag} saved in {seconds:.2f} s", flush=True)


class LossPlot(Callback):
    def __init__(self, out_dir: Path, title: str):
        self.out_dir, self.title = out_dir, title

    def on_end(self, loop, result) -> None:
        plot_loss_curve(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png", self.title)


def final_val_record(step: int, val_loss: float) -> dict[str, Any]:
    return {"step": step, "val_loss": round(val_loss, 6), "val_ppl": round(math.exp(min(val_loss, 50)), 3), "final": True}


def default_callbacks(name: str, out_dir: Path, plot_title: str, spike_sigma: float | None) -> list[Callback]:
    """Rank 0's reporters, in the order they must run (spikes are marked before the writers see the record)."""
    spikes: list[Callback] = [SpikeCheck(spike_sigma)] if spike_sigma is not None else []
    return [*spikes, MetricsFile(out_dir), TensorBoard(out_dir), Console(name), LossPlot(out_dir, plot_title)]
