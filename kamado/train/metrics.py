"""Step metrics: JSONL (always), TensorBoard (when available), throughput, TFLOP/s and MFU, memory, loss curve."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import torch

from kamado.durable import fsync_dir

# Dense bf16 peak TFLOP/s per GPU (vendor datasheets, without sparsity).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0}


def flops_per_token(n_params: int, num_layers: int, hidden: int, seq_len: int, embedding_params: int = 0) -> float:
    """Training FLOPs per token: 6N for the matmuls with weights plus 12·L·d·s for attention scores (PaLM, App. B).
    The input embedding is a lookup, not a matmul: pass its size as `embedding_params` to leave it out of N
    (an untied output layer is a real matmul and stays in)."""
    return 6.0 * (n_params - embedding_params) + 12.0 * num_layers * hidden * seq_len


def device_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def memory_mb(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"mem_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "mem_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    return {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of an appended JSONL log and the numbers of lines that are not a JSON object (a line torn by
    a kill in the middle of a write: the rest of the log is still good)."""
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    if not path.is_file():
        return records, bad
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(number)
    return records, bad


def trim_for_resume(path: Path, resume_step: int) -> dict[str, int]:
    """Make a step log fit a run resumed at `resume_step`: cut torn lines (not JSON, or missing their newline), and
    drop the records of steps after the checkpoint (the resumed run writes them again) and the end-of-run records
    at it (`final`), so no step appears twice. Streams the file (a long run's log is large): the usual case, a
    dropped tail, is one truncate; anything else is rewritten to a temp file and renamed over it."""
    dropped = {"torn_lines": 0, "records_after_resume_step": 0}
    if not path.is_file():
        return dropped
    cut_at: int | None = None  # byte offset of the first dropped line
    gap = False  # a kept line after a dropped one: a truncate is not enough
    with open(path, "rb") as fh:
        offset = 0
        for raw in fh:
            reason = _drop_reason(raw, resume_step)
            if reason:
                dropped[reason] += 1
                cut_at = offset if cut_at is None else cut_at
            elif cut_at is not None and raw.strip():
                gap = True
            offset += len(raw)
    if cut_at is None:
        return dropped
    if not gap:
        with open(path, "r+b") as fh:
            fh.truncate(cut_at)
            os.fsync(fh.fileno())
        return dropped
    tmp = path.with_name(f".{path.name}.trim-{os.getpid()}")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for raw in src:
            if not _drop_reason(raw, resume_step):
                dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return dropped


def _drop_reason(raw: bytes, resume_step: int) -> str | None:
    if not raw.strip():
        return None
    if not raw.endswith(b"\n"):
        return "torn_lines"  # the writer was killed before the line ended: the next append would join it
    try:
        record = json.loads(raw)
    except ValueError:
        return "torn_lines"
    if not isinstance(record, dict):
        return "torn_lines"
    step = record.get("step")
    if isinstance(step, int) and (step > resume_step or (step == resume_step and record.get("final"))):
        return "records_after_resume_step"
    return None


class TensorBoardWriter:
    """Scalars of metric records, by step. A resumed run purges the events after its resume step first."""

    def __init__(self, out_dir: Path, resume_step: int = 0):
        # TensorBoard is a declared dependency: a missing one is a broken install, said as such, not skipped
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step", "time"):
                self.tb.add_scalar(key, value, record["step"])

    def flush(self) -> None:
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


class MetricsWriter:
    """Rank 0 writes; JSONL is appended so a resumed run continues the same file, trimmed to the resume step
    first (and TensorBoard, when `tensorboard`, purges its events from that step on)."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int = 0, tensorboard: bool = True):
        self.enabled = enabled
        self.jsonl = out_dir / "metrics.jsonl"
        self.tb: TensorBoardWriter | None = None
        self._fh = None
        if enabled:
            dropped = trim_for_resume(self.jsonl, resume_step)
            if any(dropped.values()):
                print(f"[kamado] {self.jsonl}: resumed at step {resume_step}: dropped {dropped['torn_lines']} torn "
                      f"line(s) and {dropped['records_after_resume_step']} record(s) of later steps", flush=True)
            self._fh = open(self.jsonl, "a", encoding="utf-8")
            if tensorboard:
                self.tb = TensorBoardWriter(out_dir, resume_step)

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record) + "\n")  # one write per record: a kill tears at most the last line
        self._fh.flush()
        if self.tb is not None:
            self.tb.write(record)

    def sync(self) -> None:
        """Make every record so far durable (before a checkpoint: a resume never re-writes steps it covers)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        self.sync()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.tb is not None:
            self.tb.close()


def plot_loss_curve(metrics_path: Path, out_png: Path, title: str) -> Path | None:
    if not metrics_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, _ = read_jsonl(metrics_path)  # a torn last line (a kill mid-write) is skipped, never fatal
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None and "step" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None and "step" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out_png.with_name(out_png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png
