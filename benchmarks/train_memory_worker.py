"""One rank of benchmarks/train_memory.py (started by torchrun): build the model, wrap it in DeepSpeed's engine
with kamado's generated config, train two steps on random tokens, and count the bytes of the model states this
rank holds during and after the second backward (parameters, gradients and optimizer states all alive at once).

    torchrun --nproc_per_node 2 benchmarks/train_memory_worker.py --configs 0:fp32 2:bf16 --out r.json

Several configurations run one after the other in the same processes (start-up costs more than the measuring
on 2 shared cores); each engine is freed before the next is built, and the bytes still alive from the previous
one are recorded as `left_alive_after` (the census counts only what is reachable, so leftovers do not enter the
next configuration's classes unless the engine still references them).

How the bytes are counted: every live tensor (the garbage collector's objects, each parameter's .grad and,
under ZeRO-3, its ds_tensor partition) is reduced to its storage (views of one flat buffer count once) and
each storage is put in one class, in this order:
  params     storages of the module's parameters (ZeRO-3: their ds_tensor partitions)
  optimizer  storages of the inner torch optimizer's state (Adam moments) and of the tensors it updates when
             they are not the module's parameters (the fp32 master partitions of ZeRO 1-3 and of bf16)
  buckets    tensors held by the ZeRO optimizer under an attribute named *ipg* or *bucket* (reduce buckets,
             gradients in flight included; allocated at full size, but on CPU untouched pages are not resident)
  grads      .grad of the module's and the optimizer's parameters, and tensors held by the ZeRO optimizer under
             an attribute whose name contains "grad" (partitioned / averaged gradient buffers)
  other      everything else alive (communication buckets, the batch, buffers such as rotary tables)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _storage(t) -> tuple[int, int] | None:
    import torch

    if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
        return None
    try:
        s = t.untyped_storage()
    except RuntimeError:
        return None
    if s.nbytes() == 0:
        return None
    return s.data_ptr(), s.nbytes()


def _tensors_in(obj, depth: int = 3):
    """Tensors in obj, nested in its lists/tuples/dicts or in the attributes of plain objects (a bucket)."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth <= 0 or isinstance(obj, (str, bytes, int, float, torch.nn.Module, torch.optim.Optimizer)):
        return
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors_in(x, depth - 1)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors_in(x, depth - 1)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("deepspeed"):
        for x in vars(obj).values():
            yield from _tensors_in(x, depth - 1)


def census(engine) -> dict[str, int]:
    import torch

    module = engine.module
    zero_opt = engine.optimizer
    inner = getattr(zero_opt, "optimizer", None)
    inner = inner if isinstance(inner, torch.optim.Optimizer) else (zero_opt if isinstance(zero_opt, torch.optim.Optimizer) else None)

    classes: dict[int, str] = {}
    sizes: dict[int, int] = {}

    def put(t, cls: str) -> None:
        st = _storage(t)
        if st is not None and st[0] not in classes:
            classes[st[0]], sizes[st[0]] = cls, st[1]

    for p in module.parameters():
        put(getattr(p, "ds_tensor", None) if hasattr(p, "ds_tensor") else p.data, "params")
    if inner is not None:
        for state in inner.state.values():
            for t in _tensors_in(state):
                put(t, "optimizer")
        for group in inner.param_groups:
            for p in group["params"]:
                put(p.data, "optimizer")
                if p.grad is not None:
                    put(p.grad, "grads")
    if zero_opt is not None and zero_opt is not inner:
        zero_vars = vars(zero_opt)
        # fp32 master partitions (ZeRO-3 takes them out of the inner optimizer's param_groups between steps)
        for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat", "fp32_groups_flat_partition"):
            for t in _tensors_in(zero_vars.get(name)):
                put(t, "optimizer")
        # reduce buckets before grads: gradients in flight are views into a bucket, which is counted whole
        for name, value in zero_vars.items():
            if "ipg" in name.lower() or "bucket" in name.lower():
                for t in _tensors_in(value):
                    put(t, "buckets")
        for name, value in zero_vars.items():
            if "grad" in name.lower():
                for t in _tensors_in(value):
                    put(t, "grads")
    for p in module.parameters():
        if p.grad is not None:
            put(p.grad, "grads")
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            put(obj, "other")
    out = {"params": 0, "grads": 0, "optimizer": 0, "buckets": 0, "other": 0}  # bytes
    for ptr, cls in classes.items():
        out[cls] += sizes[ptr]
    return out


def measure(stage: int, precision: str, args, rank: int, world: int) -> dict:
    """Build, initialise and train two steps under one (ZeRO stage, precision); return this rank's figures."""
    import deepspeed
    import torch

    from kamado.train.config import PretrainConfig
    from kamado.train.data import causal_lm_loss
    from kamado.train.dsconfig import deepspeed_config
    from kamado.train.model import Shape, build_model, llama_config
    from kamado.train.schedule import lr_multiplier

    cfg = PretrainConfig(zero_stage=stage, precision=precision, seq_len=args.seq_len, micro_batch_size=1,
                         max_steps=10, warmup_steps=1)
    ds_config = deepspeed_config(cfg, world, "pretrain")
    gc.collect()
    rss0 = rss_bytes()
    torch.manual_seed(cfg.seed)
    shape = Shape(args.hidden, args.intermediate, args.layers, args.heads, args.heads, 2048)
    model = build_model(llama_config(shape, args.vocab, 1, 2, 0), ds_config if stage == 3 else None)
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    del model, optimizer, scheduler
    gen = torch.Generator().manual_seed(rank)
    measured: dict = {}

    def in_backward(param) -> None:  # noqa: ARG001 - the last gradient of the backward has just been accumulated
        gc.collect()
        measured["in_backward"] = census(engine)

    # The input embedding's gradient is the last one a backward produces: at that moment every gradient a
    # stage keeps whole (ZeRO 0 and 1 reduce and partition only after the backward) is alive.
    embedding = engine.module.get_input_embeddings().weight
    for step in range(2):
        ids = torch.randint(0, args.vocab, (1, args.seq_len + 1), generator=gen)
        hook = embedding.register_post_accumulate_grad_hook(in_backward) if step == 1 else None
        loss = causal_lm_loss(engine, {"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
        engine.backward(loss)
        if hook is not None:
            hook.remove()
        if step == 1:  # optimizer states exist (allocated at the first step) and the grads are still alive
            gc.collect()
            measured["after_backward"] = census(engine)
            measured["rss_delta"] = rss_bytes() - rss0
        engine.step()
    result = {"rank": rank, "world": world, "zero_stage": stage, "precision": precision, "n_params": n_params,
              "optimizer_class": type(engine.optimizer).__name__, **measured}
    # Free this engine before the next configuration is measured in the same process: drop the ZeRO-3 switch
    # transformers reads (else the next model would be built partitioned) and every reference we hold.
    if stage == 3:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    if hasattr(engine, "destroy"):
        engine.destroy()
    del engine, embedding, in_backward
    gc.collect()
    result["left_alive_after"] = census_all()
    return result


def census_all() -> int:
    """Bytes of every tensor storage still alive (what a previous configuration may have left behind)."""
    import torch

    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            st = _storage(obj)
            if st is not None:
                seen[st[0]] = st[1]
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", required=True, metavar="STAGE:PRECISION", help="e.g. 0:fp32 3:bf16")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = []
    for item in args.configs:
        stage, precision = item.split(":")
        r = measure(int(stage), precision, args, rank, world)
        gathered = [None] * world
        dist.all_gather_object(gathered, r)
        results.append(gathered)
        if rank == 0:
            print(f"[train_memory] ZeRO-{stage} {precision} measured", flush=True)
    if rank == 0:
        args.out.write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
