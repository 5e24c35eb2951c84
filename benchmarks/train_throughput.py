"""Issue 7, benchmark 1: kamado's ZeRO-2 pretraining tokens/s against a plain PyTorch DDP loop, 2 CPU ranks.

    python benchmarks/train_throughput.py [--steps 200] [--warmup 25] [--repeats 2] [--zero-stage 2]
                                          [--workdir DIR] [--keep]

Both sides train the same thing in the same run:
- data: the demo's packed token shards (the real corpus and tokenizer stages of recipes/tiny-cpu.yaml run into a
  temp workdir; vocab 3000), the same samples per step (kamado.train.data.batch_indices over PretrainTask);
- model: PRESETS['tiny'] built by kamado.train.model after torch.manual_seed(seed), so the same initial weights;
- optimizer: torch AdamW with the recipe's lr/betas/eps/weight decay, the same LambdaLR schedule, grad clipping
  at the recipe's grad_clip; fp32; micro-batch, seq_len, steps as in the recipe (with --steps);
- 2 ranks started by torchrun, gloo, OMP_NUM_THREADS=1 on both sides.

kamado: the real pretrain stage (`kamado run recipes/tiny-cpu.yaml --only pretrain`), tokens/s read from
<workdir>/pretrain/metrics.jsonl (the `time` each step's record was written). What that figure includes, per step:
DeepSpeed's engine (ZeRO-2 gradient partitioning with reduce-scatter-style bucketed all-reduces, clipping over
the partitioned grads, the fp32 master-partition update and the all-gather of updated parameters), one
all-reduce of a one-element "finite?" flag per micro-step (the non-finite guard), one all-reduce of
[loss, tokens] for the logged mean, one all-reduce of the stop flag (SIGUSR1/SIGTERM agreement), and rank 0's
JSONL + TensorBoard write. Excluded: start-up, the checkpoint after the last step, the final validation and
export (they happen after the last record). `checkpoint_every` is set to the step count so no checkpoint is
written mid-run.

DDP: this file's --ddp-worker mode (torch.nn.parallel.DistributedDataParallel, default 25 MB buckets), a
`loss.item()` per step and nothing else; times taken the same way (end of each step).

The tokens/s is over the steps after --warmup (first steps include allocator growth and lazy init). The runs
alternate (kamado, DDP, kamado, DDP, ...) so that load from other processes on the machine falls on both; the
ratio is of the summed tokens over the summed time of all repeats. The first and last losses of both sides are
printed: with the same init, data and optimizer they must agree closely (a check that it is the same workload).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_common import TINY_RECIPE, build_tiny_tokens, kamado_cmd, read_jsonl, run, steady_rate, torchrun_cmd  # noqa: E402

GOAL = 0.8


# ------------------------------------------------------------------ the reference: a plain DDP loop
def ddp_worker(workdir: Path, out: Path) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from kamado.tokenizer.export import load_hf
    from kamado.train.data import PretrainTask, batch_indices, causal_lm_loss
    from kamado.train.model import build_model, llama_config, resolve_shape
    from kamado.train.schedule import lr_multiplier
    from kamado.train.worker import load_workspace

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ws = load_workspace(str(workdir))  # the resolved recipe kamado's run wrote: the same config, overrides included
    cfg = ws.recipe.pretrain
    torch.manual_seed(cfg.seed)  # as kamado's worker does, right before building the model
    tokenizer = load_hf(ws.tokenizer_dir())
    config = llama_config(resolve_shape(cfg.model), len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                          tokenizer.pad_token_id)
    model = DDP(build_model(config))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(cfg))
    task = PretrainTask([(ws.stage_dir("tokenizer") / "tokens", 1.0)], cfg.seq_len, cfg.seed)
    model.train()
    rows = []
    for step in range(1, cfg.max_steps + 1):
        step_loss, n_tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            batch = task.batch(batch_indices(step - 1, micro, cfg.grad_accum, rank, world, cfg.micro_batch_size))
            last = micro == cfg.grad_accum - 1
            ctx = model.no_sync() if not last else _nullcontext()
            with ctx:
                loss = causal_lm_loss(model, batch)
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            n_tokens += batch["input_ids"].numel()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        rows.append({"step": step, "loss": step_loss, "tokens": n_tokens * world, "time": time.time()})
    # The logged loss is the mean over ranks, as kamado logs it; reduced once after the timed loop.
    mean_loss = torch.tensor([r["loss"] for r in rows], dtype=torch.float64)
    dist.all_reduce(mean_loss)
    for r, value in zip(rows, (mean_loss / world).tolist()):
        r["loss"] = value
    if rank == 0:
        out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dist.barrier()
    dist.destroy_process_group()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------ the driver
def run_kamado(workdir: Path, overrides: list[str], log: Path) -> list[dict]:
    shutil.rmtree(workdir / "pretrain", ignore_errors=True)  # a fresh run, not a resume or a skip
    args = ["run", str(TINY_RECIPE), "--only", "pretrain", "--set", f"workdir={workdir}"]
    for o in overrides:
        args += ["--set", o]
    run(kamado_cmd(*args), log=log)
    return read_jsonl(workdir / "pretrain" / "metrics.jsonl")


def run_ddp(workdir: Path, log: Path) -> list[dict]:
    out = workdir / "ddp_metrics.jsonl"
    out.unlink(missing_ok=True)
    run(torchrun_cmd(2, Path(__file__).resolve(), "--ddp-worker", str(workdir), "--ddp-out", str(out)), log=log)
    return read_jsonl(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=25, help="steps left out of the rate")
    ap.add_argument("--repeats", type=int, default=2, help="kamado/DDP pairs, alternated")
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="reuse this workdir (its corpus/tokenizer stages are kept)")
    ap.add_argument("--keep", action="store_true", help="keep the temp workdir")
    ap.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--ddp-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.ddp_out)
        return
    if args.warmup < 1 or args.steps <= args.warmup + 1:
        ap.error("need 1 <= --warmup < --steps - 1")

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="kamado-train-throughput-"))).resolve()
    t0 = time.time()
    build_tiny_tokens(workdir)
    print(f"token shards ready in {workdir} ({time.time() - t0:.0f}s)", flush=True)
    overrides = [f"pretrain.max_steps={args.steps}", f"pretrain.checkpoint_every={args.steps}",
                 f"pretrain.log_every={args.steps}", f"pretrain.zero_stage={args.zero_stage}",
                 "pretrain.nproc_per_node=2", "pretrain.eval_every=0"]
    totals = {"kamado": [0.0, 0.0], "ddp": [0.0, 0.0]}  # tokens, seconds
    losses: dict[str, list[dict]] = {}
    for r in range(args.repeats):
        for name, fn in (("kamado", lambda: run_kamado(workdir, overrides, workdir / f"kamado-{r}.log")),
                         ("ddp", lambda: run_ddp(workdir, workdir / f"ddp-{r}.log"))):
            rows = [row for row in fn() if "tokens" in row]
            rate, n = steady_rate(rows, args.warmup)
            tokens = sum(row["tokens"] for row in sorted(rows, key=lambda x: x["step"])[args.warmup:])
            totals[name][0] += tokens
            totals[name][1] += tokens / rate
            losses[name] = rows
            print(f"  repeat {r + 1} {name:>6}: {rate:10,.0f} tokens/s over steps {args.warmup + 1}..{args.steps}", flush=True)

    cfg = json.loads((workdir / "pretrain" / "deepspeed_config.json").read_text())
    k_rate = totals["kamado"][0] / totals["kamado"][1]
    d_rate = totals["ddp"][0] / totals["ddp"][1]
    first = {k: v[0]["loss"] for k, v in losses.items()}
    last = {k: v[-1]["loss"] for k, v in losses.items()}
    print()
    pre = _resolved(workdir)["pretrain"]
    print(f"model: PRESETS['tiny'] (vocab 3000), micro-batch {pre['micro_batch_size']} x seq {pre['seq_len']} per rank, "
          f"grad_accum {pre['grad_accum']}, 2 ranks (gloo), fp32, OMP_NUM_THREADS=1, {args.steps} steps, "
          f"{args.repeats} repeat(s), rate over steps after {args.warmup}; DeepSpeed config: {json.dumps(cfg['zero_optimization'])}")
    print(f"{'':22}{'tokens/s':>12}{'first loss':>12}{'last loss':>12}")
    print(f"{'kamado ZeRO-' + str(args.zero_stage):22}{k_rate:12,.0f}{first['kamado']:12.4f}{last['kamado']:12.4f}")
    print(f"{'plain DDP':22}{d_rate:12,.0f}{first['ddp']:12.4f}{last['ddp']:12.4f}")
    ratio = k_rate / d_rate
    print(f"ratio kamado / DDP: {ratio:.3f}  (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")
    if args.keep or args.workdir:
        print(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def _resolved(workdir: Path) -> dict:
    import yaml

    return yaml.safe_load((workdir / "recipe.resolved.yaml").read_text())


if __name__ == "__main__":
    if "--ddp-worker" in sys.argv:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
