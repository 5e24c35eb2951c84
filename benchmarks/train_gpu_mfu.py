"""Issue 7, benchmark 3: tokens/s and MFU of kamado's pretrain loop for a ~1B model on one GPU (bf16, ZeRO-2).

    python benchmarks/train_gpu_mfu.py [--preset 1b] [--seq-len 2048] [--micro-batch 4] [--grad-accum 4]
                                       [--steps 40] [--warmup 10] [--vocab 32000] [--activation-checkpointing]
                                       [--zero-stage 2] [--workdir DIR] [--dry-run] [--allow-cpu]

The real thing, not a copy of it: the script prepares a run folder the pretrain worker reads, then starts
`torchrun --nproc_per_node 1 -m kamado.train.pretrain WORKDIR` (the same worker `kamado run` starts):
- <workdir>/tokenizer/hf: a synthetic fast tokenizer of --vocab ids (a WordLevel model from `tokenizers`; the
  benchmark needs only the vocabulary size, which sets the embedding and output-layer FLOPs);
- <workdir>/tokenizer/tokens: uniformly random token shards in the tokenizer stage's format (index.json,
  uint16/uint32 .bin), enough for every step without reuse;
- <workdir>/recipe.resolved.yaml: a recipe with only the pretrain stage (preset, bf16, ZeRO stage, shapes).
tokens/s is read from <workdir>/pretrain/metrics.jsonl over the steps after --warmup; MFU = tokens/s x
flops_per_token / peak, with kamado.train.metrics.flops_per_token (6N + 12·L·d·s, PaLM's accounting, counted
whether or not activation checkpointing recomputes the forward) and PEAK_TFLOPS (dense bf16) for the GPU's name.
Attention is whatever kamado's model builder gives (transformers' default "sdpa": PyTorch's flash kernel in bf16).

Without CUDA it stops with a message. --dry-run prepares a small run folder, checks that kamado's data loader and
recipe reader accept it, prints the plan, and trains nothing (works on CPU). --allow-cpu runs the whole path on
CPU (for checking the script with a small preset, e.g. --preset tiny --seq-len 128 --micro-batch 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_common import bench_env, read_jsonl, run, steady_rate  # noqa: E402

GOAL_MFU_H100 = 0.45
RELEASE_PROMPTS = ["t4 t5 t6", "t7 t8"]  # the worker's final export runs the model on the release prompts


def write_tokenizer(hf_dir: Path, vocab_size: int):
    """A fast tokenizer whose vocabulary is <unk> <s> </s> <pad> t4 ... t{V-1}: the ids are all that matters."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, **{f"t{i}": i for i in range(4, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(hf_dir))
    return fast


def write_token_shards(tokens_dir: Path, vocab_size: int, train_tokens: int, val_tokens: int, seed: int = 0) -> dict:
    """Random ids in kamado.tokenizer.encode's layout: <split>-00000.bin + index.json."""
    from kamado.tokenizer.encode import token_dtype

    tokens_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    rng = np.random.default_rng(seed)
    shards = []
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        name = f"{split}-00000.bin"
        rng.integers(4, vocab_size, size=n, dtype=np.int64).astype(dtype).tofile(tokens_dir / name)
        shards.append({"file": name, "split": split, "tokens": n, "docs": 1, "source": "random"})
    index = {"dtype": dtype.name, "eos_id": 2, "vocab_size": vocab_size, "shards": shards}
    (tokens_dir / "index.json").write_text(json.dumps(index, indent=2))
    return index


def recipe(args, workdir: Path) -> dict:
    return {
        "name": f"mfu-{args.preset}",
        "workdir": str(workdir),
        "stages": ["pretrain"],
        "pretrain": {
            "model": {"preset": args.preset},
            "nproc_per_node": 1, "zero_stage": args.zero_stage, "precision": "bf16",
            "seq_len": args.seq_len, "micro_batch_size": args.micro_batch, "grad_accum": args.grad_accum,
            "max_steps": args.steps, "warmup_steps": min(10, args.steps // 2), "lr": 3e-4,
            "checkpoint_every": args.steps, "keep_checkpoints": 1, "log_every": 5, "eval_every": 0, "eval_batches": 1,
            "activation_checkpointing": args.activation_checkpointing,
        },
        "release": {"prompts": RELEASE_PROMPTS},
    }


def prepare(args, workdir: Path, train_tokens: int) -> None:
    import yaml

    write_tokenizer(workdir / "tokenizer" / "hf", args.vocab)
    write_token_shards(workdir / "tokenizer" / "tokens", args.vocab, train_tokens, val_tokens=4 * (args.seq_len + 1))
    (workdir / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe(args, workdir), sort_keys=False))


def model_size(args) -> tuple[int, object]:
    """Parameters of the preset at this vocabulary, counted on the meta device (nothing allocated)."""
    import torch

    from kamado.recipe import ModelConfig
    from kamado.train.model import count_parameters, llama_config, resolve_shape

    config = llama_config(resolve_shape(ModelConfig(preset=args.preset)), args.vocab, 1, 2, 3)
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return count_parameters(model), config


def check_workdir(workdir: Path) -> str:
    """Read the run folder back the way the worker does: recipe, tokenizer and data loader."""
    from kamado.tokenizer.export import load_hf
    from kamado.train.data import PretrainTask
    from kamado.train.worker import load_workspace

    ws = load_workspace(str(workdir))
    cfg = ws.recipe.pretrain
    tok = load_hf(ws.tokenizer_dir())
    task = PretrainTask([(ws.stage_dir("tokenizer") / "tokens", 1.0)], cfg.seq_len, cfg.seed)
    batch = task.batch(list(range(cfg.micro_batch_size)))
    return (f"recipe read back (pretrain: preset {cfg.model.preset}, ZeRO-{cfg.zero_stage}, {cfg.precision}); tokenizer "
            f"{len(tok)} ids; {task.num_samples:,} train samples; a micro-batch is {tuple(batch['input_ids'].shape)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the rate")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--workdir", type=Path, help="run folder (default: a temp folder, removed at the end)")
    ap.add_argument("--dry-run", action="store_true", help="prepare a small run folder, check it, print the plan")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU anyway (to check the script with a small preset)")
    args = ap.parse_args()
    if args.steps <= args.warmup + 1:
        ap.error("--steps must exceed --warmup + 1")

    import torch

    from kamado.train.metrics import PEAK_TFLOPS, flops_per_token

    cuda = torch.cuda.is_available()
    if not cuda and not (args.dry_run or args.allow_cpu):
        sys.exit("train_gpu_mfu: CUDA is not available on this machine; this benchmark needs a GPU "
                 "(use --dry-run to check the plan on CPU)")
    n_params, config = model_size(args)
    fpt = flops_per_token(n_params, config.num_hidden_layers, config.hidden_size, args.seq_len,
                          embedding_params=config.vocab_size * config.hidden_size)
    tokens_per_step = args.micro_batch * args.grad_accum * args.seq_len
    train_tokens = (args.steps + 1) * tokens_per_step * 2 + args.seq_len + 1  # no sample seen twice
    gpu = torch.cuda.get_device_name() if cuda else "none (CPU)"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="kamado-gpu-mfu-"))).resolve()
    print(f"plan: preset {args.preset}: {n_params / 1e9:.3f}B parameters (hidden {config.hidden_size}, "
          f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads / {config.num_key_value_heads} kv, "
          f"vocab {args.vocab}); bf16, ZeRO-{args.zero_stage}, 1 GPU, seq {args.seq_len}, micro-batch {args.micro_batch} "
          f"x grad_accum {args.grad_accum} = {tokens_per_step:,} tokens/step, {args.steps} steps (rate after {args.warmup}), "
          f"activation checkpointing {'on' if args.activation_checkpointing else 'off'}")
    print(f"      flops/token {fpt / 1e9:.2f} GFLOP (6N + 12·L·d·s); GPU: {gpu}; peak {peak or 'n/a'} TFLOP/s bf16; "
          f"run folder {workdir}")
    print(f"      command: torchrun --standalone --nproc_per_node 1 -m kamado.train.pretrain {workdir}")
    if args.dry_run:
        prepare(args, workdir, train_tokens=min(train_tokens, 4 * args.micro_batch * (args.seq_len + 1)))
        print("dry run: " + check_workdir(workdir))
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return

    t0 = time.time()
    shutil.rmtree(workdir / "pretrain", ignore_errors=True)
    prepare(args, workdir, train_tokens)
    print(check_workdir(workdir), flush=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "kamado.train.pretrain",
           str(workdir)]
    run(cmd, env=bench_env(), quiet=False)
    rows = [r for r in read_jsonl(workdir / "pretrain" / "metrics.jsonl") if "tokens" in r]
    rate, n = steady_rate(rows, args.warmup)
    result = json.loads((workdir / "pretrain" / "result.json").read_text())
    tflops = rate * result["flops_per_token"] / 1e12
    mem = max((r.get("mem_allocated_mb") or r.get("max_rss_mb") or 0) for r in rows)
    print(f"\n{gpu}: {rate:,.0f} tokens/s over {n} steps, {tflops:.1f} TFLOP/s "
          f"({result['parameters']:,} params, {result['flops_per_token'] / 1e9:.3f} GFLOP/token), peak memory {mem:,.0f} MB")
    if peak:
        mfu = tflops / peak
        goal = f" (goal on H100 >= {GOAL_MFU_H100:.0%}: {'met' if mfu >= GOAL_MFU_H100 else 'NOT met'})" if "H100" in gpu else ""
        print(f"MFU {mfu:.1%} of {peak:.0f} TFLOP/s{goal}; kamado's own per-step MFU (median) "
              f"{float(np.median([r['mfu'] for r in rows[args.warmup:] if r.get('mfu') is not None] or [float('nan')])):.1%}")
    else:
        print("MFU n/a (no peak figure for this device in kamado.train.metrics.PEAK_TFLOPS)")
    print(f"total wall time {time.time() - t0:.0f}s (including start-up, the final checkpoint and the export)")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
