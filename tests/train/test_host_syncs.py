"""Host–device syncs per optimizer step of the real TrainLoop (#15/#19): on a step that does not log, kamado's code
reads at most one value back from the device (the step's agreement on non-finite losses and stop signals).

A sync is any read of a tensor's value on the host: `.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool()`,
`float()`, `int()` of a tensor, and `torch.cuda.synchronize()`. Each call is attributed to the innermost frame
outside torch: kamado's own code, or DeepSpeed's (its ZeRO-2 optimizer reads its grad norm and overflow flag
itself; counted and reported, not kamado's to remove). Only the main thread counts (the prefetching loader builds
batches from numpy in a worker thread). The run is real: one gloo rank, DeepSpeed ZeRO-2 on CPU, real shards.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.train.tiny_loop import one_rank, tiny_loop

KAMADO = str(Path(__file__).resolve().parents[2] / "kamado")
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextmanager
def count_host_syncs(on_sync):
    """Call `on_sync(kind, file:line)` for each host read of a tensor on the main thread, while inside."""
    main = threading.get_ident()
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    original_sync = torch.cuda.synchronize

    def caller() -> str:
        import sys

        frame = sys._getframe(2)
        while frame is not None and ("/torch/" in frame.f_code.co_filename or frame.f_code.co_filename == __file__):
            frame = frame.f_back
        return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            if threading.get_ident() == main:
                on_sync(name, caller())
            return fn(self, *args, **kwargs)

        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    torch.cuda.synchronize = lambda *a, **k: (on_sync("cuda.synchronize", caller()), original_sync(*a, **k))[1]
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
        torch.cuda.synchronize = original_sync


def run_counted(tmp_path: Path, **cfg_overrides) -> tuple[dict[int, Counter], dict[int, Counter], object]:
    """A real loop run; returns (kamado's syncs, DeepSpeed's syncs) per step number (1-based) and the result."""
    with one_rank() as env:
        loop = tiny_loop(env, tmp_path, **cfg_overrides)
        task, accum = loop.task, loop.cfg.grad_accum
        batches = [0]
        real_batch = task.batch

        def batch(indices):  # marks the steps: micro-batch calls of step s are calls (s-1)·accum … s·accum-1
            batches[0] += 1
            return real_batch(indices)

        task.batch = batch
        ours: dict[int, Counter] = {}
        theirs: dict[int, Counter] = {}

        def on_sync(kind: str, where: str) -> None:
            step = max(1, (batches[0] + accum - 1) // accum)
            book = ours if where.startswith(KAMADO) else theirs
            book.setdefault(step, Counter())[f"{kind} {where.rsplit('/', 2)[-2]}/{where.rsplit('/', 1)[-1]}"] += 1

        with count_host_syncs(on_sync):
            result = loop.run()
        return ours, theirs, result


@pytest.mark.distributed
def test_at_most_one_host_sync_per_optimizer_step_that_does_not_log(tmp_path):
    steps = 8
    ours, theirs, result = run_counted(tmp_path, max_steps=steps, grad_accum=2, log_every=1000, checkpoint_every=1000,
                                       eval_every=0)
    assert result.steps == steps and result.stopped is None
    quiet = range(2, steps)  # step 1 and the last step log; the end (final save, validation) counts to the last
    per_step = {s: sum(ours.get(s, Counter()).values()) for s in quiet}
    print("kamado syncs per quiet step:", per_step, "e.g.", dict(ours.get(2, {})))
    print("DeepSpeed's own syncs per quiet step:", {s: sum(theirs.get(s, Counter()).values()) for s in quiet})
    assert all(n <= 1 for n in per_step.values()), {s: dict(ours.get(s, {})) for s in quiet}
    # the count is real: the log steps do read their metrics back
    assert sum(ours.get(1, Counter()).values()) >= 1 and sum(ours.get(steps, Counter()).values()) >= 1
