"""PPO's collectives, and the training loop's it runs on, reduce tensors on the rank's device (#15): NCCL rejects
CPU tensors, so a statistic or stop flag made with `torch.tensor(...)` and no `device=` passes under gloo and
fails on GPUs.

On a CPU machine the model's device is the CPU, where such a tensor lands anyway. So each of 2 real gloo ranks
makes `meta` the default device: a tensor made without `device=` then lands off the model's device, as a CPU
tensor does next to a CUDA model, and the check wrapped around `all_reduce` fails.
"""

from __future__ import annotations

import ast
import inspect

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kamado.finetune import ppo, ppo_losses, ppo_rollout
from kamado.train import loop, steploop

COLLECTIVES = {"all_reduce", "all_gather", "broadcast", "reduce", "all_to_all", "reduce_scatter", "gather", "scatter"}
CHECKED = {"all_mean", "any_rank", "whiten_global", "sum_over_ranks"}  # the helpers below exercises
MODULES = (ppo, ppo_losses, ppo_rollout, loop, steploop)  # PPO and the loop machinery it runs on


def _rank_main(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model_device = torch.device("cpu")
    real_all_reduce = dist.all_reduce

    def on_model_device(tensor, *args, **kwargs):
        assert tensor.device == model_device, f"collective on {tensor.device}, model on {model_device}"
        return real_all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = on_model_device
    try:
        x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) + 4 * rank  # made before: on the model's device
        mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        with torch.device("meta"):  # from here, a tensor made without device= is not on the model's device
            mean = ppo_losses.all_mean([float(rank), 1.0, 10.0 * rank], 2, model_device)
            stop_from_rank_1, no_stop = steploop.any_rank([rank == 1, False], model_device, 2)
            summed = steploop.sum_over_ranks(x.sum().reshape(1), 2)
            white = ppo_losses.whiten_global(x, mask, 2)
        assert mean == [0.5, 1.0, 5.0]
        assert stop_from_rank_1 is True and no_stop is False
        assert summed.tolist() == [10.0 + 26.0]
        kept = torch.tensor([1.0, 2.0, 3.0, 5.0, 6.0, 7.0])  # both ranks' unmasked entries
        expected = (x - kept.mean()) / torch.sqrt(kept.var(unbiased=False) + 1e-8) * mask
        assert torch.allclose(white, expected, atol=1e-5)
    finally:
        dist.all_reduce = real_all_reduce
        dist.destroy_process_group()


def test_ppo_collectives_reduce_tensors_on_the_model_device(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path / "rendezvous"),), nprocs=2, join=True)


def test_every_collective_in_ppo_is_in_a_checked_helper():
    """A new collective in PPO's modules or the loop must go through (or join) the helpers the test above checks."""
    found: dict[str, str] = {}
    for fn in (f for m in MODULES for f in ast.walk(ast.parse(inspect.getsource(m)))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVES
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "dist"):
                    found.setdefault(node.func.attr + "@" + fn.name, fn.name)
    assert found and set(found.values()) <= CHECKED, f"collectives outside the checked helpers: {found}"
