"""Many short training lives of one tiny model, each a forked process that can be SIGKILLed at a chosen moment.

Importing torch, transformers and DeepSpeed takes ~10 s here; a fork of a process that has them imported starts
training in about a second. So one harness process (run by a test as `python -m tests.reliability.harness
SCENARIO OUT.json WORKDIR`) imports them once, then forks every life: a real TrainLoop on DeepSpeed (ZeRO-2, one
gloo rank, CPU) over real token shards, with kamado's real CheckpointManager. The only instrument is a pipe on
which a life reports "resumed at step r", "save of step s starts" and "... ends", so the harness can kill it a
chosen delay into a save. Nothing in the parent runs a torch op (a fork copies no thread pool in use).

Scenarios (each writes its findings to OUT.json; the tests assert on them):
- kills: an unbroken run, then the same run SIGKILLed during checkpoint saves at >= 20 delays spread over the
  measured save time, plus kills during re-saves of the same step; every rerun must resume from a complete
  checkpoint no older than the newest committed one, and the final per-step losses must equal the unbroken run's.
- faults: a full disk during a save (RLIMIT_FSIZE in the life), a missing or corrupt `latest`, a finished wsd
  run extended by raising max_steps, a finished cosine run extended.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

VOCAB = 256
TRAIN_TOKENS = 12_000


def make_tokens(tokens_dir: Path, seed: int = 0) -> Path:
    """Real token shards (kamado's writer) with an index.json carrying sizes and digests, as encode.py writes."""
    from kamado.tokenizer.encode import write_token_shard
    from kamado.tokenizer.shard_check import shard_digest

    tokens_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for split, n in (("train", TRAIN_TOKENS), ("val", 1_000)):
        name = f"{split}-00000.bin"
        docs = [rng.integers(3, VOCAB, size=int(rng.integers(20, 200))).tolist() for _ in range(n // 100)]
        n_tok, n_docs = write_token_shard(tokens_dir / name, docs, 2, np.dtype(np.uint16))
        entries.append({"file": name, "split": split, "tokens": n_tok, "docs": n_docs, "source": "synthetic",
                        "bytes": (tokens_dir / name).stat().st_size, "digest": shard_digest(tokens_dir / name)})
    index = {"dtype": "uint16", "eos_id": 2, "vocab_size": VOCAB, "shards": entries}
    (tokens_dir / "index.json").write_text(json.dumps(index, indent=2))
    return tokens_dir


def train_config(**overrides):
    from kamado.train.config import PretrainConfig

    base = dict(nproc_per_node=1, zero_stage=2, seq_len=32, micro_batch_size=2, max_steps=8, lr=3e-3, warmup_steps=2,
                checkpoint_every=1, keep_checkpoints=2, log_every=1000, eval_batches=1, seed=1234)
    return PretrainConfig(**{**base, **overrides})


# ------------------------------------------------------------------ one life (in the forked child)
def _life(out_dir: Path, tokens: Path, cfg_overrides: dict, pipe_w: int, fsize_limit: int | None) -> None:
    def send(msg: str) -> None:
        os.write(pipe_w, (msg.replace("\n", " ") + "\n").encode())

    try:
        log = os.open(out_dir.parent / f"{out_dir.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        import deepspeed
        import torch
        import torch.distributed as dist

        from kamado.train.data import PretrainTask
        from kamado.train.dist import DistEnv
        from kamado.train.loop import TrainLoop
        from kamado.train.model import Shape, build_model, llama_config

        torch.set_num_threads(1)
        DistEnv(0, 0, 1, "127.0.0.1", 0).export()  # DeepSpeed asks for LOCAL_RANK even with one rank
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # no port: one rank
        deepspeed.init_distributed(dist_backend="gloo")
        if fsize_limit is not None:  # a full disk: any write past this size fails with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
        cfg = train_config(**cfg_overrides)
        torch.manual_seed(cfg.seed)
        model = build_model(llama_config(Shape(32, 64, 2, 2, 1, 64), VOCAB, 1, 2, 0))
        task = PretrainTask([(tokens, 1.0)], cfg.seq_len, cfg.seed)
        loop = TrainLoop(cfg, model, task, out_dir, DistEnv(0, 0, 1, "127.0.0.1", 0), torch.device("cpu"))
        manager = loop.checkpoints
        real_save, real_load = manager.save, manager.load

        def save(engine, step, client):
            send(f"S {step}")
            tag = real_save(engine, step, client)
            send(f"E {step}")
            return tag

        def load(engine):
            client = real_load(engine)
            send(f"R {client['step'] if client else 0}")
            return client

        manager.save, manager.load = save, load
        result = loop.run()
        send(f"D {result.steps}")
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
        send("X " + json.dumps(f"{type(exc).__name__}: {exc}"))
        traceback.print_exc()
        os._exit(1)


@dataclass
class Life:
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (seconds since start, kind, value)
    killed: bool = False
    kill_in_save: bool = False  # the kill landed after the save began and before it ended
    exit_status: int = 0

    def first(self, kind: str) -> str | None:
        return next((v for _, k, v in self.events if k == kind), None)

    def save_seconds(self) -> list[float]:
        starts = [t for t, k, _ in self.events if k == "S"]
        ends = [t for t, k, _ in self.events if k == "E"]
        return [e - s for s, e in zip(starts, ends)]


def run_life(out_dir: Path, tokens: Path, cfg: dict, kill_at_save: int | None = None, delay: float = 0.0,
             fsize_limit: int | None = None) -> Life:
    """One training life; with `kill_at_save=k`, SIGKILL `delay` seconds after its k-th save began."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _life(out_dir, tokens, cfg, write_fd, fsize_limit)
    os.close(write_fd)
    life, saves, t0 = Life(), 0, time.monotonic()
    with os.fdopen(read_fd) as pipe:
        for line in pipe:
            kind, _, value = line.strip().partition(" ")
            life.events.append((time.monotonic() - t0, kind, value))
            if kind == "S":
                saves += 1
                if saves == kill_at_save:
                    time.sleep(delay)
                    os.kill(pid, signal.SIGKILL)
                    life.killed = True
                    rest = pipe.read()  # what the life reported before the kill took effect
                    ended = any(x.startswith("E ") for x in rest.splitlines())
                    life.events += [(time.monotonic() - t0, *x.partition(" ")[::2]) for x in rest.splitlines() if x]
                    life.kill_in_save = not ended
                    break
    _, status = os.waitpid(pid, 0)
    life.exit_status = status
    return life


# ------------------------------------------------------------------ what is on disk
def step_losses(out_dir: Path) -> list[tuple[int, float]]:
    from kamado.train.metrics import read_jsonl

    records, _ = read_jsonl(out_dir / "metrics.jsonl")
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def checkpoint_state(folder: Path, saving_step: int, old_inode: int | None) -> str:
    """Where in a save of `saving_step` a kill left the checkpoint folder (`old_inode`: the folder of that step
    before the life, when the step is being saved again)."""
    from kamado.train.checkpoint import MANIFEST, tag_for

    tag = tag_for(saving_step)
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    latest = (folder / "latest").read_text().strip() if (folder / "latest").is_file() else None
    if f"replaced-{tag}" in names:
        return "old copy moved aside" + (", new one in place" if tag in names else ", new one not yet in place")
    if f"tmp-{tag}" in names:
        return "rank files written, manifest too" if (folder / f"tmp-{tag}" / MANIFEST).is_file() else "rank files being written"
    if any(n.startswith("deleting-") for n in names):
        return "pruning"
    if tag not in names:
        return "nothing written yet"
    if old_inode is not None:
        return "old copy still in place" if (folder / tag).stat().st_ino == old_inode else "new copy in place"
    return "committed" if latest == tag else "installed, latest not yet written"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------ scenarios
GOLDEN = 0.6180339887  # i * GOLDEN mod 1: distinct delays that fill [0, 1) evenly in any prefix


def scenario_kills(work: Path) -> dict:
    from kamado.train.checkpoint import tag_for
    from kamado.train.metrics import read_jsonl

    tokens = make_tokens(work / "tokens")
    steps, want_in_save, want_resave, max_lives = 30, 22, 6, 45
    cfg = {"max_steps": steps}
    straight = run_life(work / "straight", tokens, cfg)
    expected = step_losses(work / "straight")
    durations = straight.save_seconds()
    out, ckpts = work / "killed", work / "killed" / "checkpoints"
    report: dict = {"steps": steps, "save_seconds": durations, "kills": [], "problems": [], "lives": 0}
    if straight.first("X"):
        report["problems"].append(f"unbroken run failed: {straight.first('X')}")
        return report
    committed = 0  # the newest step a life reported saved: a resume below it would have lost it
    committed_bytes: dict[int, int] = {}
    pending: dict | None = None

    def life_with_kill(kind: str, delay: float | None) -> Life:
        nonlocal committed, pending
        old = ckpts / tag_for(steps)
        old_inode = old.stat().st_ino if kind == "resave" and old.is_dir() else None
        life = run_life(out, tokens, cfg, kill_at_save=None if delay is None else 1, delay=delay or 0.0)
        report["lives"] += 1
        resumed = int(life.first("R") or -1)
        if life.first("X"):
            report["problems"].append(f"life failed: {life.first('X')}")
        if resumed < committed:
            report["problems"].append(f"after the kill at {pending and pending['delay']}s: resumed at {resumed}, "
                                      f"below the saved step {committed}")
        if pending is not None:
            pending["resumed_next_at"] = resumed
            pending["bytes_lost"] = committed_bytes.get(committed, 0) if resumed < committed else 0
            report["kills"].append(pending)
            pending = None
        if delay is not None:
            saving = int(next((v for _, k, v in life.events if k == "S"), -1))  # -1: the life died before saving
            pending = {"kind": "resave" if saving == resumed else "save", "delay": delay, "in_save": life.kill_in_save,
                       "saving_step": saving, "state": checkpoint_state(ckpts, saving, old_inode)}
        for _, kind_, value in life.events:
            if kind_ == "E":
                committed = max(committed, int(value))
                committed_bytes[int(value)] = dir_bytes(ckpts / tag_for(int(value)))
        return life

    # SIGKILL a delay into the save of a new step; the delays fill [0, span) where span starts at the unbroken
    # run's first save (each life's kill hits its first save, the slowest: nothing warm yet) and shrinks when a
    # kill lands after its save ended (saves vary on a busy machine)
    span, i = durations[0], 0
    while sum(k["in_save"] for k in report["kills"] + ([pending] if pending else [])) < want_in_save and report["lives"] < max_lives:
        delay = round(span * ((i * GOLDEN) % 1.0), 5)
        life = life_with_kill("save", delay)
        if not life.kill_in_save:
            span = max(0.01, min(span, delay))
        i += 1
    life_with_kill("save", None)  # on to the end, unkilled
    # a finished run rerun saves the same step again: kill that re-save at spread delays
    for j in range(want_resave):
        life_with_kill("resave", round(durations[0] * ((j * GOLDEN) % 1.0), 5))
    last = life_with_kill("resave", None)
    report["final_exit"] = last.exit_status
    got = step_losses(out)
    report["losses_equal"] = got == expected
    report["expected_losses"], report["got_losses"] = expected, got
    records, bad = read_jsonl(out / "metrics.jsonl")
    report["final_records"] = sum(1 for r in records if r.get("final"))
    report["torn_lines_left"] = len(bad)
    report["checkpoint_folder"] = sorted(p.name for p in ckpts.iterdir())
    return report


def scenario_faults(work: Path) -> dict:
    from kamado.train.checkpoint import manifest_problem, tag_for

    tokens = make_tokens(work / "tokens")
    report: dict = {}

    # --- full disk: a finished 4-step wsd run, extended to 8; the extension's first save hits the size limit
    wsd = {"schedule": "wsd", "decay_fraction": 0.1, "checkpoint_every": 2}
    straight = run_life(work / "wsd-straight", tokens, {**wsd, "max_steps": 8})
    out = work / "disk"
    first = run_life(out, tokens, {**wsd, "max_steps": 4})
    step4 = out / "checkpoints" / tag_for(4)
    before = {p.name: p.read_bytes() for p in step4.iterdir()}
    limit = max(p.stat().st_size for p in step4.iterdir()) // 2
    full = run_life(out, tokens, {**wsd, "max_steps": 8}, fsize_limit=limit)
    after = {p.name: p.read_bytes() for p in step4.iterdir()} if step4.is_dir() else {}
    latest = (out / "checkpoints" / "latest").read_text().strip()
    problem = manifest_problem(step4)
    resumed = run_life(out, tokens, {**wsd, "max_steps": 8})
    report["full_disk"] = {
        "first_exit": first.exit_status, "fsize_limit": limit, "error": full.first("X"), "exit_status": full.exit_status,
        "previous_changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
        "previous_problem": problem, "latest_after_failure": latest,
        "resumed_at": int(resumed.first("R") or -1), "resume_error": resumed.first("X"),
        "losses_equal_unbroken": step_losses(out) == step_losses(work / "wsd-straight"),
        "unbroken_error": straight.first("X"),
    }

    # --- `latest` missing / corrupt / naming a checkpoint with a truncated rank file
    base = work / "latest-base"
    run_life(base, tokens, {"max_steps": 4, "keep_checkpoints": 3})
    cases = {}
    for case in ("missing", "garbage", "truncated-newest"):
        out = work / f"latest-{case}"
        shutil.copytree(base, out)
        marker = out / "checkpoints" / "latest"
        if case == "missing":
            marker.unlink()
        elif case == "garbage":
            marker.write_bytes(b"\xff\xfe\x00not a tag")
        else:
            victim = max((p for p in (out / "checkpoints" / tag_for(4)).iterdir() if p.suffix == ".pt"), key=lambda p: p.stat().st_size)
            with open(victim, "r+b") as fh:
                fh.truncate(victim.stat().st_size // 2)
        life = run_life(out, tokens, {"max_steps": 6, "keep_checkpoints": 3})
        log = (out.parent / f"{out.name}.log").read_text(errors="replace")
        cases[case] = {"resumed_at": int(life.first("R") or -1), "error": life.first("X"),
                       "warned": "[kamado] warning:" in log and "resuming from the newest complete checkpoint" in log,
                       "warning": next((x for x in log.splitlines() if "[kamado] warning:" in x), None)}
    report["latest"] = cases

    # --- a finished cosine run extended: resumes at its last step, trains on, lr never above where it was
    out = work / "cosine"
    run_life(out, tokens, {"max_steps": 6, "checkpoint_every": 3})
    extended = run_life(out, tokens, {"max_steps": 9, "checkpoint_every": 3})
    from kamado.train.metrics import read_jsonl

    records, _ = read_jsonl(out / "metrics.jsonl")
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    report["cosine_extension"] = {"resumed_at": int(extended.first("R") or -1), "error": extended.first("X"),
                                  "steps": sorted(lrs), "lrs": lrs, "done": extended.first("D")}
    return report


def preload() -> None:
    """What every life needs, imported once here so that each fork starts warm (no torch op runs here)."""
    import deepspeed  # noqa: F401
    import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401 - 7 s of torch.compile imports, once
    import deepspeed.runtime.zero.stage_1_and_2  # noqa: F401
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()  # DeepSpeed's JIT-built CPU comm op, loaded once (and cached) here rather than in every life
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torch  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    import kamado.train.data  # noqa: F401
    import kamado.train.loop  # noqa: F401
    import kamado.train.model  # noqa: F401


def main(argv: list[str]) -> int:
    scenario, out_json, work = argv
    preload()
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report = {"kills": scenario_kills, "faults": scenario_faults}[scenario](work_dir)
    report["seconds"] = round(time.time() - t0, 1)
    Path(out_json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
