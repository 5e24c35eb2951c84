"""Step metrics: JSONL (always), TensorBoard (when available), throughput, TFLOP/s and MFU, memory, loss curve."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import torch

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


class MetricsWriter:
    """Rank 0 writes; JSONL is appended so a resumed run continues the same file."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.jsonl = out_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional; JSONL is the record
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "time") and value is not None:
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_loss_curve(metrics_path: Path, out_png: Path, title: str) -> Path | None:
    if not metrics_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
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
