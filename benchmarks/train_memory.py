"""Issue 7, benchmark 2: parameter + gradient + optimizer memory per rank for ZeRO 0/1/2/3 on 2 CPU ranks,
measured on DeepSpeed's engine with kamado's generated config, against the ZeRO paper's formulas.

    python benchmarks/train_memory.py [--stages 0 1 2 3] [--precisions fp32 bf16] [--hidden 512] [--layers 8]
                                      [--intermediate 1408] [--vocab 8000]

All (stage, precision) pairs are measured one after the other in one torchrun of
benchmarks/train_memory_worker.py (2 ranks, gloo; each engine freed before the next is built): the Llama
model (hidden 512, 8 layers, 8 heads, vocab 8000: Ψ ≈ 33.9M parameters) built by kamado.train.model (under
ZeRO-3 partitioned at construction, as the pretrain stage builds it), torch AdamW as the client optimizer,
`kamado.train.dsconfig.deepspeed_config` for the engine, two training steps on random tokens. The worker counts
the bytes of every live tensor's storage (see its docstring for the classes) at two moments of the second step:
when the backward's last gradient (the input embedding's) has just been accumulated, and after the backward; the
table shows the moment where params + grads + optimizer is larger, per rank (the larger rank).

Formulas (Rajbhandari et al., "ZeRO", SC'20, Fig. 1 / Sec. 5), Ψ parameters, Nd = 2 data-parallel ranks:
  mixed precision (bf16 here), Adam: 2Ψ bf16 params, 2Ψ bf16 grads, K=12: fp32 master params, momentum, variance
      stage 0: 2Ψ+2Ψ+12Ψ   1: 2Ψ+2Ψ+12Ψ/Nd   2: 2Ψ+(2Ψ+12Ψ)/Nd   3: (2Ψ+2Ψ+12Ψ)/Nd
  fp32, Adam (the paper's accounting with 4-byte params and grads; the fp32 params are the master copy, K=8):
      stage 0: 4Ψ+4Ψ+8Ψ    1: 4Ψ+4Ψ+8Ψ/Nd    2: 4Ψ+(4Ψ+8Ψ)/Nd     3: (4Ψ+4Ψ+8Ψ)/Nd
Reduce buckets (DeepSpeed's reduce_bucket_size, 5e8 elements unless set) and activations are outside the
formulas: buckets are shown in their own column (allocated size: on CPU most of those pages are never touched),
and the RSS growth from before the model was built to after the second backward is shown for scale only (it
holds activations and allocator caches, and a later configuration may reuse pages an earlier one freed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_common import bench_env, run, torchrun_cmd  # noqa: E402

WORKER = Path(__file__).resolve().parent / "train_memory_worker.py"
STATES = ("params", "grads", "optimizer")


def formula(stage: int, precision: str, psi: int, nd: int) -> dict[str, float]:
    """Bytes per rank of (params, grads, optimizer) by the ZeRO paper's accounting."""
    p, g, k = (2, 2, 12) if precision == "bf16" else (4, 4, 8)
    return {"params": p * psi / (nd if stage >= 3 else 1), "grads": g * psi / (nd if stage >= 2 else 1),
            "optimizer": k * psi / (nd if stage >= 1 else 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8000)
    args = ap.parse_args()
    shape = ["--hidden", str(args.hidden), "--intermediate", str(args.intermediate), "--layers", str(args.layers),
             "--heads", str(args.heads), "--vocab", str(args.vocab)]

    configs = [f"{stage}:{precision}" for precision in args.precisions for stage in args.stages]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kamado-train-memory-") as tmp:
        out = Path(tmp) / "memory.json"
        run(torchrun_cmd(2, WORKER, "--configs", *configs, "--out", str(out), *shape), env=bench_env(),
            log=Path(tmp) / "worker.log")
        rows = [(ranks[0]["zero_stage"], ranks[0]["precision"], ranks) for ranks in json.loads(out.read_text())]
    print(f"measured {len(rows)} configurations in {time.time() - t0:.0f}s (one torchrun, 2 ranks, gloo)")
    leftovers = max(r["left_alive_after"] for _, _, ranks in rows for r in ranks)

    psi, nd = rows[0][2][0]["n_params"], rows[0][2][0]["world"]
    mb = 2**20
    print(f"\nΨ = {psi:,} parameters (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), Nd = {nd} ranks; "
          "MB = 2^20 bytes, per rank (the larger of the ranks); in brackets: bytes / Ψ")
    head = (f"{'stage':>5} {'prec':>4} | {'params':>13} {'grads':>13} {'optimizer':>13} | {'measured':>13} "
            f"{'formula':>13} {'ratio':>6} | {'moment':>14} {'buckets MB':>10} {'RSS +MB':>8}")
    print(head)
    print("-" * len(head))
    for stage, precision, ranks in rows:
        best, moment = None, ""
        for r in ranks:
            for when in ("in_backward", "after_backward"):
                c = r.get(when)
                if c and (best is None or sum(c[k] for k in STATES) > sum(best[k] for k in STATES)):
                    best, moment = c, when.replace("_", " ")
        assert best is not None
        measured = sum(best[k] for k in STATES)
        f = formula(stage, precision, psi, nd)
        expected = sum(f.values())
        cells = " ".join(f"{best[k] / mb:7.1f}[{best[k] / psi:4.1f}]" for k in STATES)
        buckets = max(max(r.get(w, {}).get("buckets", 0) for w in ("in_backward", "after_backward")) for r in ranks)
        rss = max(r["rss_delta"] for r in ranks)
        print(f"{stage:>5} {precision:>4} | {cells} | {measured / mb:7.1f}[{measured / psi:4.1f}] "
              f"{expected / mb:7.1f}[{expected / psi:4.1f}] {measured / expected:6.2f} | {moment:>14} "
              f"{buckets / mb:10.0f} {rss / mb:8.0f}")
    print(f"\nlargest bytes left alive after freeing an engine (before the next configuration): {leftovers / mb:.1f} MB")
    print("formula per rank: bf16 (K=12) 16Ψ, 4Ψ+12Ψ/Nd, 2Ψ+14Ψ/Nd, 16Ψ/Nd; fp32 (K=8) 16Ψ, 8Ψ+8Ψ/Nd, 4Ψ+12Ψ/Nd, 16Ψ/Nd "
          "for stages 0, 1, 2, 3")


if __name__ == "__main__":
    main()
