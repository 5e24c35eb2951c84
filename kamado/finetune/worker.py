"""The finetune stages' rank entry point: train/worker.py's `run_worker`, with an export that also handles what
fine-tuning adds to a model: LoRA adapters (merged into plain weights) and non-LM heads (the reward model's
scalar head, saved as its own transformers class, with no LM reference logits).

`run_worker(..., export=export_final)` uses the export below; the writing itself is train's `export_final`.
"""

from __future__ import annotations

from typing import Callable

from kamado.train.worker import export_final as train_export_final
from kamado.train.worker import worker_main


def finetune_main(stage: str, build: Callable) -> Callable[[list[str] | None], int]:
    return worker_main(stage, build, export=export_final)


def export_final(loop, ws, stage: str, tokenizer, env) -> None:
    """Whatever the task reports at the end (`task.final_report`, e.g. the reward model's held-back accuracy), then
    `<stage>/hf` with consolidated fp32 weights (LoRA merged) + tokenizer, and `reference_logits.pt` for causal LMs."""
    from kamado.finetune.lora import is_peft, merged_from_state

    report = getattr(loop.task, "final_report", None)
    if report is not None:
        report(loop)
    causal = not getattr(loop.task, "scalar_head", False)
    rebuild = (lambda module, state, _stage: merged_from_state(module, state)) if is_peft(loop.engine.module) else None
    train_export_final(loop, ws, stage, tokenizer, env, rebuild=rebuild, causal=causal)
