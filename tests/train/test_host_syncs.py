"""Host–device syncs per optimizer step of the real TrainLoop (#15/#19): on a step that does not log, no host read
waits for the step just issued. The step's agreement (non-finite losses, stop signals) is read only after the next
step has been issued, so on a GPU the host queues step N+1 while step N runs.

A sync is any read of a tensor's value on the host: `.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool()`,
`float()`, `int()` of a tensor, and `torch.cuda.synchronize()`. Each call is attributed to the innermost frame
outside torch: kamado's own code, or DeepSpeed's (its ZeRO-2 optimizer reads its grad norm and overflow flag
itself; counted and reported, not kamado's to remove). A read inside `Agreement.read` is tagged with the step whose
agreement it reads; any other read of kamado's is taken as a read of the step just issued. Only the main thread
counts (the prefetching loader builds batches from numpy in a worker thread). The run is real: one gloo rank,
DeepSpeed ZeRO-2 on CPU, real shards.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from kamado.train import steploop
from tests.train.tiny_loop import one_rank, tiny_loop

pytestmark = pytest.mark.distributed
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


class SyncLog:
    """Per window k (from train_step k's call to train_step k+1's): kamado's reads of step k's tensors or of
    tensors it cannot tell (`waits`), its reads of an earlier step's agreement (`deferred`: that step's number),
    and DeepSpeed's reads (`theirs`)."""

    def __init__(self):
        self.window = 0
        self.reading: int | None = None  # the step whose agreement is being read
        self.waits: dict[int, Counter] = {}
        self.deferred: dict[int, list[int]] = {}
        self.theirs: dict[int, Counter] = {}

    def on_sync(self, kind: str, where: str) -> None:
        label = f"{kind} {where.rsplit('/', 2)[-2]}/{where.rsplit('/', 1)[-1]}"
        if not where.startswith(KAMADO):
            self.theirs.setdefault(self.window, Counter())[label] += 1
        elif self.reading is not None and self.reading < self.window:
            self.deferred.setdefault(self.window, []).append(self.reading)
        else:
            self.waits.setdefault(self.window, Counter())[label] += 1

    def count(self, book: dict, k: int) -> int:
        return sum(book.get(k, Counter()).values())


@contextmanager
def logged_run(loop, log: SyncLog, monkeypatch):
    real_step, real_read = loop.train_step, steploop.Agreement.read

    def train_step():
        log.window += 1
        return real_step()

    def read(agreement):
        log.reading = agreement.step
        try:
            return real_read(agreement)
        finally:
            log.reading = None

    loop.train_step = train_step
    monkeypatch.setattr(steploop.Agreement, "read", read)
    with count_host_syncs(log.on_sync):
        yield


def test_no_host_read_waits_for_the_step_just_issued_on_steps_that_do_not_log(tmp_path, monkeypatch):
    steps, log = 8, SyncLog()
    with one_rank() as env:
        loop = tiny_loop(env, tmp_path, max_steps=steps, grad_accum=2, log_every=1000, checkpoint_every=4, eval_every=0)
        with logged_run(loop, log, monkeypatch):
            result = loop.run()
    assert result.steps == steps and result.stopped is None
    quiet = [2, 3, 5, 6, 7]  # step 1 and the last step log, step 4 checkpoints
    print("kamado reads of the step just issued, per quiet step:", {k: log.count(log.waits, k) for k in quiet})
    print("deferred agreement reads, per window:", log.deferred)
    print("DeepSpeed's own reads per quiet step:", {k: log.count(log.theirs, k) for k in quiet})
    assert all(log.count(log.waits, k) == 0 for k in quiet), {k: dict(log.waits.get(k, {})) for k in quiet}
    # each quiet step's agreement is read once, after the next step is issued; steps that read anyway read their
    # own at once (step 1, the checkpoint step 4, the last step), so the step after them reads nothing deferred
    assert log.deferred == {3: [2], 4: [3], 6: [5], 7: [6], 8: [7]}
    # the count is real: the log, checkpoint and last steps read their agreement and metrics at once
    assert all(log.count(log.waits, k) >= 1 for k in (1, 4, steps))
    assert log.count(log.theirs, 2) >= 1  # and DeepSpeed's reads are seen (kept out of kamado's count)


def _signalled_run(tmp_path: Path, out_name: str, signal_in_step: int, checkpoint_every: int = 1000):
    """A one-rank loop that gets SIGUSR1 while step `signal_in_step` runs; returns its result."""
    with one_rank() as env:
        loop = tiny_loop(env, tmp_path, out_name, max_steps=10, log_every=1000, checkpoint_every=checkpoint_every)
        real_step = loop.train_step

        def train_step():
            if loop.step + 1 == signal_in_step:
                os.kill(os.getpid(), signal.SIGUSR1)  # handled at once: the flag is up before the step's agreement
            return real_step()

        loop.train_step = train_step
        return loop.run()


def test_a_signal_in_a_quiet_step_stops_after_the_next_step_and_at_once_on_a_checkpoint_step(tmp_path):
    """The one-step lag of the deferred agreement: a signal in quiet step 3 stops the run after step 4, with its
    checkpoint and STOPPED.json at step 4; in a checkpoint step (6) it stops at that step, before going on."""
    quiet = _signalled_run(tmp_path, "quiet", 3)
    on_checkpoint = _signalled_run(tmp_path, "checkpoint", 6, checkpoint_every=6)
    for result, out, step in ((quiet, "quiet", 4), (on_checkpoint, "checkpoint", 6)):
        stopped = json.loads((tmp_path / out / "STOPPED.json").read_text())
        assert result.stopped == "signal" and result.steps == step, (out, result)
        assert stopped == {"reason": "signal", "signal": "SIGUSR1", "step": step}
        assert (tmp_path / out / "checkpoints" / f"step{step:07d}").is_dir()
        rows = [json.loads(x) for x in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r][-1] == step  # every step up to the stop is recorded
