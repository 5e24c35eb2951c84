"""Many lives of the release stage on one workdir, each a forked child that may be SIGKILLed a chosen delay
after it starts (run by tests/reliability/test_release_kill.py as `python -m tests.reliability.release_kill_harness
WORKDIR OUT.json KILLS`).

torch, transformers and kamado are imported once here, so a forked life starts releasing at once and the
delays can be spread over the measured length of one unbroken release. The parent runs no torch op.

Every cycle: remove release/DONE.json (the state a kill between the final rename and the done-marker leaves:
a complete release on disk that is not marked done), start a life, SIGKILL it after the cycle's delay, look at
what it left, then run a life to the end (the rerun). After the first (unbroken) life the user's files are put
into the release folder (user.txt, my-notes/todo.txt). Findings go to OUT.json; the test asserts on them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"
STAGES = "stages=[corpus,tokenizer,pretrain,release]"


def _life(workdir: str) -> None:
    """The child: run the release stage (skipped when done), exit 0 on success."""
    code = 1
    try:
        log = os.open(f"{workdir}.release-lives.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        from kamado.recipe import load_recipe
        from kamado.local import run_stages

        run_stages(load_recipe(RECIPE, [f"workdir={workdir}", STAGES]), ["release"])
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _start(workdir: str) -> int:
    pid = os.fork()
    if pid == 0:
        _life(workdir)
    return pid


def _state(release: Path, name: str, required) -> dict:
    final = release / name
    done = (release / "DONE.json").is_file()
    missing = [f for f in required(final) if not (final / f).is_file()] if final.is_dir() else ["<the folder>"]
    return {"done": done, "final": final.is_dir(), "final_missing": missing,
            "partial": (release / f".{name}.partial").exists(), "old": (release / f".{name}.old").exists()}


def main(workdir: str, out: str, kills: int) -> None:
    import sentencepiece  # noqa: F401  (imported once, before the forks: a life spends its time releasing)
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM  # noqa: F401

    import kamado.eval.tasks  # noqa: F401
    import kamado.release.stage  # noqa: F401
    from kamado.recipe import load_recipe
    from kamado.release.stage import required_files

    recipe = load_recipe(RECIPE, [f"workdir={workdir}", STAGES])
    release = Path(workdir) / "release"
    name = recipe.release.model_name
    start = time.time()
    pid = _start(workdir)
    partial_at = None  # when the partial folder appeared: kills are spread from shortly before it to the end
    while not (reaped := os.waitpid(pid, os.WNOHANG))[0]:
        if partial_at is None and (release / f".{name}.partial").exists():
            partial_at = time.time() - start
        time.sleep(0.02)
    first_rc = os.waitstatus_to_exitcode(reaped[1])
    unbroken = time.time() - start
    # A second unbroken life, warm as the killed ones will be: the first pays cold caches, and delays spread over
    # its length left the last kills after a warm life had ended (5 of 8 kills landed in one CI run).
    (release / "DONE.json").unlink(missing_ok=True)
    start = time.time()
    os.waitpid(_start(workdir), 0)
    unbroken = min(unbroken, time.time() - start)
    partial_at = partial_at if partial_at is not None else 0.0
    findings = {"unbroken_s": round(unbroken, 2), "partial_at_s": round(partial_at, 2), "unbroken_rc": first_rc, "cycles": []}
    # the user's things in the (now kamado-made) release folder: a note and a folder of their own
    (release / "my-notes").mkdir()
    (release / "my-notes" / "todo.txt").write_text("公開前に確認すること\n", encoding="utf-8")
    (release / "user.txt").write_text("keep me\n")
    for k in range(kills):
        (release / "DONE.json").unlink(missing_ok=True)
        start_at = 0.7 * partial_at  # a few kills before the partial folder exists, most while it is written
        delay = start_at + (unbroken - start_at) * 0.95 * k / max(kills - 1, 1)
        pid = _start(workdir)
        time.sleep(delay)
        killed = os.waitpid(pid, os.WNOHANG)[0] == 0  # still running (a finished life is reaped here)
        if killed:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        after_kill = _state(release, name, required_files)
        pid = _start(workdir)
        rerun_rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        findings["cycles"].append({"delay_s": round(delay, 2), "killed": killed, "after_kill": after_kill,
                                   "rerun_rc": rerun_rc, "after_rerun": _state(release, name, required_files)})
    Path(out).write_text(json.dumps(findings, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
