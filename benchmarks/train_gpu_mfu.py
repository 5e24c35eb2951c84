"""Issues 7 and 19: tokens/s per GPU, MFU and peak memory of kamado's pretrain loop for the 1b preset on one GPU
(bf16, ZeRO-2), at sequence 2048 and 4096, plain and with each option: document attention, Liger kernels,
torch.compile, activation checkpointing.

    python benchmarks/train_gpu_mfu.py [--preset 1b] [--seq-lens 2048,4096] [--options all|none|doc,liger,...]
                                       [--tokens-per-micro-batch 8192] [--grad-accum 4] [--steps 30] [--warmup 10]
                                       [--vocab 32000] [--mean-doc-len 1024] [--peak-tflops 989] [--zero-stage 2]
                                       [--workdir DIR] [--dry-run] [--allow-cpu]

One row per (sequence length, option): "base" and each option alone (doc, liger, compile, ckpt). The real thing,
not a copy of it: for each row the script prepares a run folder the pretrain worker reads, then starts
`torchrun --nproc_per_node 1 -m kamado.train.pretrain WORKDIR` (the worker `kamado run` starts):
- <workdir>/tokenizer/hf: a synthetic fast tokenizer of --vocab ids (a WordLevel model from `tokenizers`; the
  benchmark needs only the vocabulary size, which sets the embedding and output-layer FLOPs);
- <workdir>/tokenizer/tokens: random token shards in the tokenizer stage's format, documents of geometric length
  (mean --mean-doc-len) each ending with EOS, so document attention has real documents to separate;
- <workdir>/recipe.resolved.yaml: a recipe with only the pretrain stage (preset, bf16, ZeRO stage, the options).
tokens/s is read from <workdir>/pretrain/metrics.jsonl over the steps after --warmup (compile's first step, which
pays the compilation, is inside the warmup).

FLOPs (per token, training = 3x forward): 6·N (N without the input embedding, a lookup) + 12·L·d·s for attention
scores and values over the full causal window (PaLM App. B, Megatron's accounting, counted whether or not activation
checkpointing recomputes the forward). MFU = tokens/s x FLOPs/token / peak; peak: --peak-tflops, default the GPU's
dense bf16 figure in kamado.train.metrics.PEAK_TFLOPS (H100/H200 989). Under document attention the attention work
actually done is smaller (sum of squared document lengths instead of s², printed as "attention FLOPs needed"); the
MFU column keeps the full-window count so rows compare at equal work. Anchors on H100 bf16 dense: Megatron-LM 41-48%,
torchtitan 33-39%.

NCCL: one GPU needs none; for multi-node runs see kamado/train/nccl.py (transport, NCCL_IB_*, NCCL_SOCKET_IFNAME,
TORCH_NCCL_ASYNC_ERROR_HANDLING, timeouts). The plan prints the NCCL variables this shell has and known-bad values.

Without CUDA it stops with a message. --dry-run prints the plan and the FLOP counts of every row, then proves the
path on CPU: a tiny model (preset tiny, seq 128) trains 3 steps through torchrun and the real worker with document
attention and activation checkpointing on (Liger needs a GPU; compile is left out on CPU, where Inductor's C++
build takes minutes: tests/train/test_kernels.py checks it). --allow-cpu runs the rows on CPU (with a small preset).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_common import bench_env, read_jsonl, run, steady_rate  # noqa: E402

GOAL_MFU_H100 = 0.45
RELEASE_PROMPTS = ["t4 t5 t6", "t7 t8"]  # the worker's final export runs the model on the release prompts
EOS_ID = 2
# option name → the recipe keys it sets (each row is "base" plus one option)
OPTIONS = {
    "base": {},
    "doc": {"document_attention": True},
    "liger": {"liger_kernels": True},
    "compile": {"compile": True},
    "ckpt": {"activation_checkpointing": True},
}


@dataclass
class Row:
    seq_len: int
    option: str
    micro_batch: int
    flops_per_token: float
    attention_needed: float  # attention FLOPs/token actually computed (less under document attention)
    tokens_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    mem_gb: float | None = None
    note: str = ""


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


def random_documents(n_tokens: int, vocab_size: int, mean_doc_len: int, rng) -> np.ndarray:
    """Random ids with an EOS closing each document; document lengths are geometric with the given mean."""
    ids = rng.integers(4, vocab_size, size=n_tokens, dtype=np.int64)
    ends = np.cumsum(rng.geometric(1.0 / mean_doc_len, size=n_tokens // max(mean_doc_len // 4, 1) + 1)) - 1
    ids[ends[ends < n_tokens]] = EOS_ID
    return ids


def write_token_shards(tokens_dir: Path, vocab_size: int, train_tokens: int, val_tokens: int, mean_doc_len: int,
                       seed: int = 0) -> dict:
    """Random documents in kamado.tokenizer.encode's layout: <split>-00000.bin + index.json (with digests)."""
    from kamado.tokenizer.encode import shard_digest, token_dtype

    tokens_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    rng = np.random.default_rng(seed)
    shards = []
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        name = f"{split}-00000.bin"
        ids = random_documents(n, vocab_size, mean_doc_len, rng)
        ids.astype(dtype).tofile(tokens_dir / name)
        shards.append({"file": name, "split": split, "tokens": n, "docs": int((ids == EOS_ID).sum()), "source": "random",
                       "bytes": (tokens_dir / name).stat().st_size, "digest": shard_digest(tokens_dir / name)})
    index = {"dtype": dtype.name, "eos_id": EOS_ID, "vocab_size": vocab_size, "shards": shards}
    (tokens_dir / "index.json").write_text(json.dumps(index, indent=2))
    return index


def recipe(args, workdir: Path, seq_len: int, micro_batch: int, option: str, precision: str = "bf16") -> dict:
    return {
        "name": f"mfu-{args.preset}-{seq_len}-{option}",
        "workdir": str(workdir),
        "stages": ["pretrain"],
        "pretrain": {
            "model": {"preset": args.preset},
            "nproc_per_node": 1, "zero_stage": args.zero_stage, "precision": precision,
            "seq_len": seq_len, "micro_batch_size": micro_batch, "grad_accum": args.grad_accum,
            "max_steps": args.steps, "warmup_steps": min(10, args.steps // 2), "lr": 3e-4,
            "checkpoint_every": args.steps, "keep_checkpoints": 1, "log_every": 5, "eval_every": 0, "eval_batches": 1,
            **OPTIONS[option],
        },
        "release": {"prompts": RELEASE_PROMPTS},
    }


def prepare(args, workdir: Path, seq_len: int, micro_batch: int, option: str, train_tokens: int, precision: str = "bf16") -> None:
    import yaml

    if not (workdir / "tokenizer" / "tokens" / "index.json").is_file():
        write_tokenizer(workdir / "tokenizer" / "hf", args.vocab)
        write_token_shards(workdir / "tokenizer" / "tokens", args.vocab, train_tokens,
                           val_tokens=4 * (max(args.seq_lens) + 1), mean_doc_len=args.mean_doc_len)
    shutil.rmtree(workdir / "pretrain", ignore_errors=True)
    (workdir / "recipe.resolved.yaml").write_text(
        yaml.safe_dump(recipe(args, workdir, seq_len, micro_batch, option, precision), sort_keys=False))


def model_size(preset: str, vocab: int) -> tuple[int, object]:
    """Parameters of the preset at this vocabulary, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import LlamaForCausalLM

    from kamado.train.config import ModelConfig
    from kamado.train.model import count_parameters, llama_config, resolve_shape

    config = llama_config(resolve_shape(ModelConfig(preset=preset)), vocab, 1, EOS_ID, 3)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return count_parameters(model), config


def attention_needed(config, seq_len: int, mean_doc_len: int, document: bool, samples: int = 64) -> float:
    """Attention FLOPs per token (12·L·d·s_eff, same accounting as flops_per_token): s_eff = s for a full window,
    the token-weighted mean document span (Σ len² / s) when attention stays within documents."""
    full = 12.0 * config.num_hidden_layers * config.hidden_size * seq_len
    if not document:
        return full
    rng = np.random.default_rng(1)
    ids = random_documents(samples * seq_len, 4 + 1, mean_doc_len, rng).reshape(samples, seq_len)
    spans = []
    for row in ids:
        cuts = [0, *(np.flatnonzero(row[:-1] == EOS_ID) + 1).tolist(), seq_len]
        spans.append(sum((b - a) ** 2 for a, b in zip(cuts, cuts[1:])) / seq_len)
    return full * float(np.mean(spans)) / seq_len


def check_workdir(workdir: Path) -> str:
    """Read the run folder back the way the worker does: recipe, tokenizer and data loader."""
    from kamado.tokenizer.export import load_hf
    from kamado.train.data import PretrainTask
    from kamado.train.worker import load_workspace

    ws = load_workspace(str(workdir))
    cfg = ws.recipe.pretrain
    tok = load_hf(ws.tokenizer_dir())
    task = PretrainTask([(ws.stage_dir("tokenizer") / "tokens", 1.0)], cfg.seq_len, cfg.seed, prefetch=False)
    batch = task.batch(list(range(cfg.micro_batch_size)))
    docs = int((batch["input_ids"] == EOS_ID).sum())
    return (f"recipe read back (pretrain: preset {cfg.model.preset}, ZeRO-{cfg.zero_stage}, {cfg.precision}); tokenizer "
            f"{len(tok)} ids; {task.num_samples:,} train samples; a micro-batch is {tuple(batch['input_ids'].shape)} "
            f"with {docs} document ends")


def run_row(args, workdir: Path, row: Row, train_tokens: int, precision: str) -> None:
    prepare(args, workdir, row.seq_len, row.micro_batch, row.option, train_tokens, precision)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "kamado.train.pretrain",
           str(workdir)]
    run(cmd, env=bench_env(), quiet=True, log=workdir / f"log-{row.seq_len}-{row.option}.txt")
    rows = [r for r in read_jsonl(workdir / "pretrain" / "metrics.jsonl") if "tokens" in r]
    rate, _ = steady_rate(rows, args.warmup)
    row.tokens_per_s = rate  # one GPU: per GPU
    row.tflops = rate * row.flops_per_token / 1e12
    row.mem_gb = max((r.get("mem_allocated_mb") or r.get("max_rss_mb") or 0) for r in rows) / 1024
    if args.peak:
        row.mfu = row.tflops / args.peak
    result = json.loads((workdir / "pretrain" / "result.json").read_text())
    row.note = f"attention {result.get('attention')}"


def print_table(rows: list[Row], peak: float | None) -> None:
    print(f"\n{'seq':>5} {'option':<8} {'mb':>3} {'GFLOP/tok':>9} {'attn needed':>11} {'tokens/s/GPU':>12} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'peak mem GB':>11}")
    for r in rows:
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "-"
        tok = f"{r.tokens_per_s:,.0f}" if r.tokens_per_s is not None else "-"
        tfl = f"{r.tflops:.1f}" if r.tflops is not None else "-"
        mem = f"{r.mem_gb:.1f}" if r.mem_gb is not None else "-"
        print(f"{r.seq_len:>5} {r.option:<8} {r.micro_batch:>3} {r.flops_per_token / 1e9:>9.2f} "
              f"{r.attention_needed / 1e9:>9.3f} G {tok:>12} {tfl:>8} {mfu:>6} {mem:>11} {r.note}")
    if peak:
        print(f"MFU against {peak:.0f} TFLOP/s dense bf16; goal on H100 >= {GOAL_MFU_H100:.0%} "
              "(Megatron-LM 41-48%, torchtitan 33-39%)")


def dry_run_step(args) -> None:
    """The whole path on CPU with a tiny model: torchrun → kamado.train.pretrain, document attention and
    activation checkpointing on, 3 steps."""
    tiny = argparse.Namespace(**{**vars(args), "preset": "tiny", "seq_lens": [128], "grad_accum": 1, "steps": 3,
                                 "vocab": 512, "mean_doc_len": 48})
    workdir = Path(tempfile.mkdtemp(prefix="kamado-gpu-mfu-dry-"))
    OPTIONS["doc+ckpt"] = {"document_attention": True, "activation_checkpointing": True}
    try:
        prepare(tiny, workdir, 128, 2, "doc+ckpt", train_tokens=64 * 129, precision="fp32")
        print("dry run: " + check_workdir(workdir))
        t0 = time.time()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
               "kamado.train.pretrain", str(workdir)]
        run(cmd, env=bench_env(), quiet=True, log=workdir / "log.txt")
        result = json.loads((workdir / "pretrain" / "result.json").read_text())
        rows = [r for r in read_jsonl(workdir / "pretrain" / "metrics.jsonl") if "loss" in r]
        print(f"dry run: tiny model trained {result['steps']} steps on CPU through torchrun and the pretrain worker "
              f"(attention {result.get('attention')}, activation checkpointing on) in {time.time() - t0:.0f}s; "
              f"losses {[r['loss'] for r in rows]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--seq-lens", default="2048,4096", help="comma-separated sequence lengths")
    ap.add_argument("--options", default="all", help="all | none | comma-separated of " + ",".join(list(OPTIONS)[1:]))
    ap.add_argument("--tokens-per-micro-batch", type=int, default=8192, help="micro-batch = this / seq_len (same tokens per row)")
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the rate")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--mean-doc-len", type=int, default=1024, help="mean document length of the synthetic shards")
    ap.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s for MFU (default: the GPU's, e.g. H100 989)")
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="run folder (default: a temp folder, removed at the end)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and FLOP counts, train a tiny model 3 steps on CPU")
    ap.add_argument("--allow-cpu", action="store_true", help="run the rows on CPU anyway (with a small preset)")
    args = ap.parse_args()
    if args.steps <= args.warmup + 1:
        ap.error("--steps must exceed --warmup + 1")
    args.seq_lens = [int(x) for x in args.seq_lens.split(",")]
    names = list(OPTIONS)[1:] if args.options == "all" else [] if args.options == "none" else args.options.split(",")
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        ap.error(f"--options: unknown {unknown} (known: {', '.join(list(OPTIONS)[1:])})")
    options = ["base", *names]

    import torch

    from kamado.train.metrics import PEAK_TFLOPS, flops_per_token
    from kamado.train.nccl import nccl_environment, nccl_warnings

    cuda = torch.cuda.is_available()
    if not cuda and not (args.dry_run or args.allow_cpu):
        sys.exit("train_gpu_mfu: CUDA is not available on this machine; this benchmark needs a GPU "
                 "(use --dry-run to check the plan on CPU)")
    gpu = torch.cuda.get_device_name() if cuda else "none (CPU)"
    args.peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    if args.dry_run and not args.peak:
        args.peak = PEAK_TFLOPS["H100"]  # the plan's MFU figures refer to an H100
    n_params, config = model_size(args.preset, args.vocab)
    rows = []
    for seq in args.seq_lens:
        fpt = flops_per_token(n_params, config.num_hidden_layers, config.hidden_size, seq,
                              embedding_params=config.vocab_size * config.hidden_size)
        mb = max(args.tokens_per_micro_batch // seq, 1)
        for option in options:
            doc = OPTIONS[option].get("document_attention", False)
            rows.append(Row(seq, option, mb, fpt, attention_needed(config, seq, args.mean_doc_len, doc)))

    print(f"plan: preset {args.preset}: {n_params / 1e9:.3f}B parameters (hidden {config.hidden_size}, "
          f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads / {config.num_key_value_heads} kv, "
          f"vocab {args.vocab}); bf16, ZeRO-{args.zero_stage}, 1 GPU, grad_accum {args.grad_accum}, {args.steps} steps per row "
          f"(rate after {args.warmup}); documents of mean length {args.mean_doc_len}; GPU: {gpu}; "
          f"peak {args.peak or 'n/a'} TFLOP/s bf16")
    print(f"      {len(rows)} rows: sequence {args.seq_lens} x options {options}; each: "
          f"torchrun --standalone --nproc_per_node 1 -m kamado.train.pretrain WORKDIR")
    nccl = {k: v for k, v in nccl_environment().items() if v != "unset"}
    print(f"      NCCL variables set here: {nccl or 'none'} (kamado/train/nccl.py says what to set on a cluster)")
    for warning in nccl_warnings():
        print(f"      NCCL WARNING: {warning}")
    if args.dry_run:
        for r in rows:
            tokens_per_step = r.micro_batch * r.seq_len * args.grad_accum
            r.note = (f"{tokens_per_step:,} tok/step, {tokens_per_step * r.flops_per_token / 1e15:.2f} PFLOP/step; at "
                      f"{GOAL_MFU_H100:.0%} MFU {GOAL_MFU_H100 * args.peak * 1e12 / r.flops_per_token:,.0f} tok/s")
        print_table(rows, args.peak)
        dry_run_step(args)
        return

    t0 = time.time()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="kamado-gpu-mfu-"))).resolve()
    longest = max(r.micro_batch * r.seq_len for r in rows)
    train_tokens = (args.steps + 1) * longest * args.grad_accum * 2 + max(args.seq_lens) + 1  # no sample seen twice
    precision = "bf16" if cuda else "fp32"
    for r in rows:
        if r.option == "liger" and not cuda:
            r.note = "skipped: Liger needs a GPU"
            continue
        print(f"row seq {r.seq_len} {r.option}: running ...", flush=True)
        try:
            run_row(args, workdir, r, train_tokens, precision)
        except SystemExit as failed:  # one option failing (e.g. out of memory) does not lose the other rows
            r.note = "FAILED: " + str(failed).splitlines()[-1][:120]
            print(str(failed)[-2000:], flush=True)
        print_table([r], args.peak)
    print_table(rows, args.peak)
    print(f"total wall time {time.time() - t0:.0f}s (start-up, final checkpoints and exports included)")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
