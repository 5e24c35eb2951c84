"""SFT and DPO training throughput (tokens/s) of kamado's loop against TRL's SFTTrainer and DPOTrainer, in the same
run, on the same model, data, batch size, steps and threads (1 process, CPU, fp32). TRL is needed for this script
only: `pip install trl`.

    python benchmarks/finetune_throughput.py --model runs/tiny-cpu/sft/hf --steps 30

Tokens are the non-padding tokens of the batches trained on (attention-mask sums), counted the same way for both.
DPO timings include the reference log-prob pass (both compute it once before training) and count chosen+rejected;
dpo-live runs the frozen reference model on every batch instead (kamado `dpo.reference: live`, TRL
`precompute_ref_log_probs=False`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _single_rank():
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29533"}.items():
        os.environ.setdefault(k, v)
    import deepspeed

    from kamado.train.dist import from_environment

    deepspeed.init_distributed(dist_backend="gloo")
    return from_environment()


def kamado_run(stage: str, model_dir: str, data: str, steps: int, batch: int, seq_len: int, lr: float) -> tuple[float, int]:
    import torch

    from kamado.finetune.config import DPOConfig, SFTConfig
    from kamado.tokenizer.export import load_hf
    from kamado.train.loop import TrainLoop
    from kamado.train.model import load_model

    env = _single_rank()
    tok = load_hf(Path(model_dir))
    common = dict(nproc_per_node=1, zero_stage=0, max_steps=steps, micro_batch_size=batch, seq_len=seq_len, lr=lr,
                  warmup_steps=0, checkpoint_every=10**6, log_every=10**6, data=[data])
    out = Path(tempfile.mkdtemp(prefix=f"kamado-bench-{stage}-"))
    t0 = time.time()
    model = load_model(Path(model_dir))
    if stage == "sft":
        from kamado.finetune.sft import SFTTask, load_sft_rows

        cfg = SFTConfig(**common, validation_fraction=0.0)
        train, val, _ = load_sft_rows(cfg.data, tok, seq_len, 0.0)
        task = SFTTask(train, val, tok.pad_token_id, cfg.seed)
    else:
        from kamado.finetune.dpo import DPOTask, load_pairs, reference_logps
        from kamado.finetune.frozen import frozen_model

        cfg = DPOConfig(**common, beta=0.1, reference="live" if stage == "dpo-live" else "precomputed")
        pairs, _ = load_pairs(cfg.data, tok, seq_len)
        if cfg.reference == "live":  # a frozen copy of the model runs on every batch
            task = DPOTask(pairs, None, tok.pad_token_id, cfg.beta, cfg.seed,
                           ref_model=frozen_model(load_model(Path(model_dir)), cfg, 1, torch.device("cpu")))
        else:
            ref = reference_logps(model, pairs, tok.pad_token_id, torch.device("cpu"))
            task = DPOTask(pairs, ref, tok.pad_token_id, cfg.beta, cfg.seed)
    loop = TrainLoop(cfg, model, task, out, env, torch.device("cpu"))
    result = loop.run()
    return time.time() - t0, result.tokens


class _Counting:
    """Wraps a data collator to count the non-padding tokens it hands to the trainer."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, 0

    def __call__(self, *a, **kw):
        batch = self.inner(*a, **kw)
        for key in ("attention_mask", "chosen_attention_mask", "rejected_attention_mask"):
            if key in batch:
                self.tokens += int(batch[key].sum())
        if "attention_mask" not in batch and "chosen_attention_mask" not in batch:
            self.tokens += int((batch["input_ids"] != -1).sum())
        return batch


def trl_run(stage: str, model_dir: str, data: str, steps: int, batch: int, seq_len: int, lr: float) -> tuple[float, int]:
    import json

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    recs = [json.loads(line) for line in open(data, encoding="utf-8") if line.strip()]
    out = tempfile.mkdtemp(prefix=f"trl-bench-{stage}-")
    common = dict(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr, lr_scheduler_type="constant",
                  report_to=[], save_strategy="no", logging_steps=10**6, use_cpu=True, dataloader_num_workers=0, seed=1234)
    t0 = time.time()
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        def user(r):
            m = {"role": "user", "content": r["instruction"]}
            return {**m, "input": r["input"]} if r.get("input") else m

        ds = Dataset.from_list([{"prompt": [user(r)], "completion": [{"role": "assistant", "content": r["output"]}]} for r in recs])
        args = SFTConfig(**common, max_length=seq_len, completion_only_loss=True, packing=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    else:
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                 "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in recs])
        args = DPOConfig(**common, beta=0.1, max_length=seq_len, precompute_ref_log_probs=stage == "dpo")
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    counter = _Counting(trainer.data_collator)
    trainer.data_collator = counter
    trainer.train()
    return time.time() - t0, counter.tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="an HF folder with tokenizer and chat template (e.g. <workdir>/sft/hf)")
    ap.add_argument("--sft-data", default=str(ROOT / "examples/data/sft/instructions.jsonl"))
    ap.add_argument("--dpo-data", default=str(ROOT / "examples/data/preference/pairs.jsonl"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("sft", "dpo", "dpo-live"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    for stage, data, batch, lr in (("sft", a.sft_data, 4, 1e-3), ("dpo", a.dpo_data, 2, 5e-4), ("dpo-live", a.dpo_data, 2, 5e-4)):
        if a.only and stage != a.only:
            continue
        ks, kt = kamado_run(stage, a.model, data, a.steps, batch, a.seq_len, lr)
        ts, tt = trl_run(stage, a.model, data, a.steps, batch, a.seq_len, lr)
        print(f"{stage}: kamado {kt / ks:,.0f} tok/s ({kt} tokens, {ks:.1f} s) | TRL {tt / ts:,.0f} tok/s ({tt} tokens, "
              f"{ts:.1f} s) | ratio kamado/TRL {(kt / ks) / (tt / ts):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
