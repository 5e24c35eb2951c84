"""SIGKILL during the corpus stage (shard writes, the plan, dedup): nothing half-written is ever marked done, and
the rerun completes with the same report, documents and duplicates as an unbroken run.

Each life of the stage is a forked child of this test process (kamado already imported: a life starts at once),
killed with SIGKILL a chosen delay after it starts; the delays are spread over an unbroken run's measured time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from kamado.corpus.readers import open_binary
from tests.corpus.corpus_helpers import LOOSE_RULES, kept_docs, prose

KILLS = 6


def _write_inputs(root: Path) -> None:
    """Three files of distinct documents (random sentences from the prose characters), some exact copies."""
    import random

    root.mkdir(parents=True)
    chars = sorted(set("".join(prose())) - set("。、"))
    rng = random.Random(0)
    for f in range(3):  # three files, one per shard: kills land in every shard's write
        with open(root / f"part{f}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(400):
                text = "。".join("".join(rng.choices(chars, k=25)) for _ in range(4)) + "。"
                if i % 50 == 7:
                    text = prose()[0]  # an exact copy in every file
                fh.write(json.dumps({"id": f"d{f}-{i}", "text": text}, ensure_ascii=False) + "\n")


def _recipe(tmp: Path) -> Path:
    path = tmp / "r.yaml"
    path.write_text(f"name: t\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: 3\n  workers: 1\n"
                    f"  rules: {LOOSE_RULES}\n  dedup: {{near: true}}\n"
                    f"  sources:\n    - {{name: a, paths: ['in/*.jsonl']}}\n", encoding="utf-8")
    return path


def _life(recipe_path: Path, kill_after: float | None) -> tuple[bool, float]:
    """Run the corpus stage in a forked child; SIGKILL it after `kill_after` seconds. (finished, seconds)."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run the stage, never return into pytest
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            from kamado.recipe import load_recipe
            from kamado.local import run_stages

            run_stages(load_recipe(recipe_path), ["corpus"], log=lambda s: None)
            code = 0
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the stage failed on its own"
            return True, time.monotonic() - t0
        if kill_after is not None and time.monotonic() - t0 >= kill_after:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False, time.monotonic() - t0
        time.sleep(0.005)


def _nothing_half_written_is_done(folder: Path) -> int:
    """Every shard marked done has its whole output; the stage is marked done only with its report. Returns the
    number of shards marked done."""
    work = folder / "work"
    done = sorted(work.glob("filtered-*.done.json")) if work.is_dir() else []
    for marker in done:
        stats = json.loads(marker.read_text())
        name = marker.name[len("filtered-"):-len(".done.json")]
        with open_binary(str(work / f"filtered-{name}.jsonl.zst")) as fh:
            rows = [json.loads(line) for line in fh]  # a torn zstd frame or JSON line raises here
        assert len(rows) == stats["kept"], marker
        assert json.loads((work / f"report-{name}.json").read_text()) == stats
        assert len((work / f"rejects-{name}.jsonl").read_text().splitlines()) == stats["docs_rejected"]
    if (work / "plan.json").exists():
        json.loads((work / "plan.json").read_text())
    if (folder / "DONE.json").exists():
        assert json.loads((folder / "report.json").read_text())["docs_in"] == 1200
    return len(done)


def _outcome(folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text())
    report["dedup"].pop("phases")
    report.pop("sources")  # absolute paths: the two runs read copies in different folders
    return {"report": report, "kept": kept_docs(folder),
            "duplicates": sorted(json.loads((folder / "duplicates.json").read_text()), key=lambda d: d["id"])}


@pytest.mark.slow
def test_sigkill_during_corpus_stage_then_rerun_completes(tmp_path):
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    for d in (ref_dir, kill_dir):
        _write_inputs(d / "in")
    finished, unbroken_s = _life(_recipe(ref_dir), None)
    assert finished
    expected = _outcome(ref_dir / "run/corpus")
    assert expected["report"]["docs_in"] == 1200 and expected["report"]["dedup"]["exact_removed"] > 0

    recipe = _recipe(kill_dir)
    kills = shards_seen_done = 0
    for i in range(KILLS):  # each life resumes what the killed one left; delays spread over the unbroken time
        finished, _ = _life(recipe, unbroken_s * (0.05 + 0.9 * i / KILLS) / 2)
        kills += not finished
        shards_seen_done = max(shards_seen_done, _nothing_half_written_is_done(kill_dir / "run/corpus"))
        if finished:
            break
    finished, _ = _life(recipe, None)
    assert finished and kills >= 3
    assert _outcome(kill_dir / "run/corpus") == expected
    print(f"corpus kill test: {kills} SIGKILLs, {kills} reruns recovered, shards done before a kill: "
          f"{shards_seen_done}, unbroken run {unbroken_s:.1f}s")
