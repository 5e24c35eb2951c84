"""The finetune stages' rank entry point: train/worker.py's `run_worker`, with an export that also handles what
fine-tuning adds to a model: LoRA adapters (merged into plain weights) and non-LM heads (the reward model's
scalar head, saved as its own transformers class).

`run_worker(..., export=export_final)` uses the export below; for a plain causal LM it defers to train's.
"""

from __future__ import annotations

import sys
from typing import Callable

from kamado.train.worker import STAGE_MODULES
from kamado.train.worker import consolidated_state
from kamado.train.worker import export_final as train_export_final


def finetune_main(stage: str, build: Callable) -> Callable[[list[str] | None], int]:
    def main(argv: list[str] | None = None) -> int:
        argv = sys.argv[1:] if argv is None else argv
        if len(argv) != 1:
            print(f"usage: python -m {STAGE_MODULES[stage]} WORKDIR", file=sys.stderr)
            return 2
        from kamado.train.worker import run_worker

        return run_worker(stage, argv[0], build, export=export_final)

    return main


def export_final(loop, ws, stage: str, tokenizer, env) -> None:
    """`<stage>/hf` with consolidated fp32 weights (LoRA merged) + tokenizer; `reference_logits.pt` for causal LMs;
    and whatever the task reports at the end (`task.final_report`, e.g. the reward model's held-back accuracy)."""
    import torch
    import torch.distributed as dist

    from kamado.finetune.lora import is_peft, merged_from_state

    module = loop.engine.module
    report = getattr(loop.task, "final_report", None)
    if report is not None:
        report(loop)
    causal = not getattr(loop.task, "scalar_head", False)
    if causal and not is_peft(module):
        return train_export_final(loop, ws, stage, tokenizer, env)
    out_dir = ws.stage_dir(stage)
    prompts = ws.recipe.release.prompts
    module.eval()
    logits = []
    if causal:
        with torch.no_grad():  # every rank runs the forward (collective under ZeRO-3)
            for text in prompts:
                ids = tokenizer(text, return_tensors="pt")["input_ids"].to(loop.device)
                logits.append(module(input_ids=ids).logits.float().cpu())
    tag = (loop.ckpt_dir / "latest").read_text().strip()
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    if env.rank == 0:
        state = consolidated_state(loop, tag)
        if is_peft(module):
            model = merged_from_state(module, state)
        else:
            model = type(module)(module.config)
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [m for m in missing if "rotary" not in m]
            if missing or unexpected:
                raise RuntimeError(f"{stage}: consolidated checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        hf_dir = out_dir / "hf"
        model.float().save_pretrained(hf_dir, safe_serialization=True)
        tokenizer.save_pretrained(hf_dir)
        if causal:
            torch.save({"prompts": prompts, "logits": logits, "checkpoint": tag}, out_dir / "reference_logits.pt")
    dist.barrier()

