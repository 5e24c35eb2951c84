"""What every rank of a training stage runs: rendezvous, build (model, task), the loop, the final export.

Each training stage has a small module with a `build` function and `main = worker_main(stage, build)`;
the launcher starts `python -m <module> WORKDIR` on every rank (torchrun locally, srun on Slurm).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

def load_workspace(workdir: str):
    from kamado.recipe import recipe_from_dict
    from kamado.stage import Workspace

    data = yaml.safe_load((Path(workdir) / "recipe.resolved.yaml").read_text(encoding="utf-8"))
    return Workspace(recipe_from_dict(data, workdir))


def setup_device(env):
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank), "nccl"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # must be set before deepspeed is imported
    return torch.device("cpu"), "gloo"


def worker_main(stage: str, build: Callable, export: Callable | None = None) -> Callable[[list[str] | None], int]:
    def main(argv: list[str] | None = None) -> int:
        argv = sys.argv[1:] if argv is None else argv
        if len(argv) != 1:
            print(f"usage: python -m MODULE WORKDIR (the {stage} stage's rank entry)", file=sys.stderr)
            return 2
        return run_worker(stage, argv[0], build, export)

    return main


@dataclass
class Rank:
    """What every rank of a training stage has after rendezvous (shared by run_worker and the PPO trainer)."""

    env: object  # kamado.train.dist.DistEnv
    device: object  # torch.device
    backend: str
    ws: object  # kamado.stage.Workspace
    cfg: object  # the stage's TrainConfig subclass
    tokenizer: object


def setup_rank(stage: str, workdir: str) -> Rank:
    """Rendezvous (torchrun's or Slurm's variables), device, DeepSpeed's process group, the resolved recipe, the
    stage's seed and the tokenizer."""
    from kamado.train.dist import from_environment

    env = from_environment()
    env.export()
    device, backend = setup_device(env)
    import deepspeed
    import torch

    from kamado.tokenizer.export import load_hf

    deepspeed.init_distributed(dist_backend=backend)
    ws = load_workspace(workdir)
    cfg = ws.recipe.stage_config(stage)
    torch.manual_seed(cfg.seed)
    return Rank(env, device, backend, ws, cfg, load_hf(ws.tokenizer_dir()))


def run_worker(stage: str, workdir: str, build: Callable, export: Callable | None = None) -> int:
    """One rank of a training stage. `export(loop, ws, stage, tokenizer, env)` writes `<stage>/hf` after the loop
    (default: `export_final`; fine-tuning passes its own for LoRA merging and non-LM heads)."""
    start = time.time()
    rank = setup_rank(stage, workdir)  # first: it sets DS_ACCELERATOR before anything imports deepspeed
    import torch.distributed as dist

    from kamado.train.loop import STOPPED_EXIT_CODE, TrainLoop
    from kamado.train.metrics import flops_per_token
    from kamado.train.model import count_parameters

    env, device, backend, ws, cfg, tokenizer = rank.env, rank.device, rank.backend, rank.ws, rank.cfg, rank.tokenizer
    out_dir = ws.stage_dir(stage)
    model, task, info = build(ws, cfg, tokenizer, device)
    n_params = count_parameters(model)
    if env.rank == 0:
        print(f"[kamado] {stage}: {n_params:,} parameters, world size {env.world_size} ({backend}), "
              f"ZeRO-{cfg.zero_stage}, {cfg.precision}", flush=True)
    mc = model.config
    flops = flops_per_token(n_params, mc.num_hidden_layers, mc.hidden_size, cfg.seq_len,
                            embedding_params=mc.vocab_size * mc.hidden_size)
    identity = {"model": {k: getattr(mc, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                       "num_attention_heads", "num_key_value_heads")}}
    loop = TrainLoop(cfg, model, task, out_dir, env, device, flops_per_token=flops, identity=identity)
    result = loop.run()
    if result.stopped:
        dist.destroy_process_group()
        return STOPPED_EXIT_CODE
    (export or export_final)(loop, ws, stage, tokenizer, env)
    if env.rank == 0:
        summary = {
            "steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
            "val_loss": result.val_loss, "tokens_trained": result.tokens, "parameters": n_params,
            "skipped_steps": result.skipped_steps, "flops_per_token": flops,
            "checkpoint_seconds": result.checkpoint_seconds,
            "world_size": env.world_size, "zero_stage": cfg.zero_stage, "precision": cfg.precision,
            "seconds": round(time.time() - start, 1), **info,
        }
        from kamado.durable import write_atomic

        write_atomic(out_dir / "result.json", json.dumps(summary, indent=2, ensure_ascii=False))
    dist.barrier()
    dist.destroy_process_group()
    return 0


def reference_logits(module, tokenizer, prompts: list[str], device) -> list:
    """The training model's logits on the release prompts, which the release stage compares with the exported
    checkpoint. Every rank runs the forwards: under ZeRO-3 they gather the parameters collectively."""
    import torch

    module.eval()
    with torch.no_grad():
        return [module(input_ids=tokenizer(text, return_tensors="pt")["input_ids"].to(device)).logits.float().cpu()
                for text in prompts]


def fresh_from_state(module, state: dict, stage: str):
    """A new model of `module`'s class and config holding `state` (the consolidated fp32 weights)."""
    model = type(module)(module.config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise RuntimeError(f"{stage}: consolidated checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def export_final(loop, ws, stage: str, tokenizer, env, rebuild: Callable | None = None, causal: bool = True) -> None:
    """Write `<stage>/hf` (consolidated fp32 weights, tokenizer) and, for a causal LM, `reference_logits.pt`.
    `rebuild(module, state, stage)` makes the model to save (default `fresh_from_state`; LoRA merges adapters)."""
    import torch
    import torch.distributed as dist

    out_dir = ws.stage_dir(stage)
    prompts = ws.recipe.release.prompts
    module = loop.engine.module
    logits = reference_logits(module, tokenizer, prompts, loop.device) if causal else []
    tag = loop.checkpoints.latest()  # the final save's: complete, every rank's files checked
    # After training, models are built whole again: drop the ZeRO-3 switch transformers reads (else rank 0's
    # model construction below would run under zero.Init, a collective the other ranks never join).
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    if env.rank == 0:
        model = (rebuild or fresh_from_state)(module, consolidated_state(loop, tag), stage)
        hf_dir = out_dir / "hf"
        model.float().save_pretrained(hf_dir, safe_serialization=True)
        tokenizer.save_pretrained(hf_dir)
        if causal:
            # tensors, strings and lists only: it loads with torch.load(..., weights_only=True)
            from kamado.durable import fsync_dir, fsync_file

            tmp = out_dir / ".reference_logits.pt.tmp"
            torch.save({"prompts": prompts, "logits": logits, "checkpoint": tag}, tmp)
            fsync_file(tmp)
            os.replace(tmp, out_dir / "reference_logits.pt")
            fsync_dir(out_dir)
    dist.barrier()


def consolidated_state(loop, tag: str) -> dict:
    """Full fp32 weights of the trained model: the module's own under ZeRO-0, else merged from the ZeRO checkpoint
    `tag` (works for stages 1–3, where no rank holds the fp32 master weights whole)."""
    if loop.cfg.zero_stage == 0:
        return {k: v.detach().float().cpu() for k, v in loop.engine.module.state_dict().items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(loop.ckpt_dir), tag=tag)
