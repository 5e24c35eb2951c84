"""`<workdir>/slurm`: its permissions, and `jobs.json`, the record of every chain of jobs submitted for a workdir.

- `<workdir>/slurm` holds the pickled calls the jobs unpickle and run as the submitter: it is created 0700, and a
  group- or world-writable one (or one owned by someone else) is refused, since anyone who can write there could
  run code as you.
- jobs.json: {"stages": {stage: [job entries of the newest chain that ran it]}, "chains": [every submission, in
  order: {"chain", "submitted_at", "stages", "replaces"}]}. "stages" is what `kamado slurm status` follows;
  "chains" is the history (nothing is forgotten; `kamado slurm cancel` cancels any of them still queued).
  Written atomically (a unique temp file, fsync, rename), under a lock held for the whole submission.
- A new chain while one of an earlier chain's jobs is still queued (pending or running) is refused with the job
  ids: both chains would write the same stage folders, and a new fingerprint would wipe a folder the old chain is
  writing. `kamado slurm cancel` first, or force it (`--force-submit`; the new chain records which jobs it
  replaced).

Also a small command line for the dry run's submit.sh (which must do the same checks and recording by hand):
    python -m kamado.slurm.chains prepare WORKDIR               # <workdir>/slurm created 0700, or refused
    python -m kamado.slurm.chains check WORKDIR [--force]       # exit 3 and the job ids when jobs are queued
    python -m kamado.slurm.chains record WORKDIR PLAN_JSON ID...  # append the chain the script submitted
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from kamado.durable import write_atomic
from kamado.recipe import RecipeError

JOBS_FILE = "jobs.json"
LOCK_FILE = "submit.lock"


class JobsStillQueued(RecipeError):
    """Jobs of an earlier submission for this workdir are pending or running."""

    def __init__(self, message: str, active: dict[str, str]):
        super().__init__(message)
        self.active = active


# ------------------------------------------------------------------ <workdir>/slurm
def private_slurm_dir(workdir: str | os.PathLike) -> Path:
    """`<workdir>/slurm`, created 0700; refused when someone else could write into it."""
    path = Path(workdir) / "slurm"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # two submitters at once: the check below still runs
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # whatever the umask
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise RecipeError(f"{path}: not a directory (kamado keeps its Slurm jobs' files there)")
    if st.st_mode & 0o022:
        raise RecipeError(f"{path}: group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}); it holds the pickled "
                          f"calls the jobs run as you, so anyone who can write there could run code as you. "
                          f"Fix it with: chmod 700 {path}")
    if st.st_uid != os.getuid():
        raise RecipeError(f"{path}: owned by uid {st.st_uid}, not by you (uid {os.getuid()}); it holds the pickled calls "
                          "the jobs run as you: use a workdir of your own")
    return path


@contextlib.contextmanager
def submit_lock(workdir: str | os.PathLike) -> Iterator[None]:
    """Held from the check for queued jobs until the new chain is recorded: a second submitter waits, then sees the
    first one's jobs and is refused."""
    lock = private_slurm_dir(workdir) / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[kamado] another submission for {workdir} is under way; waiting for it to end ({lock})", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ------------------------------------------------------------------ jobs.json
def jobs_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / "slurm" / JOBS_FILE


def read_record(workdir: str | os.PathLike) -> dict:
    """jobs.json, with a record from before the history existed read as its first chain."""
    path = jobs_path(workdir)
    if not path.is_file():
        return {"stages": {}, "chains": []}
    record = json.loads(path.read_text(encoding="utf-8"))
    record.setdefault("stages", {})
    if "chains" not in record:
        old = json.loads(json.dumps(record["stages"]))  # a copy: "stages" changes with the next chain, this must not
        record["chains"] = [{"chain": 1, "submitted_at": None, "stages": old, "replaces": []}] if old else []
    return record


def write_record(workdir: str | os.PathLike, record: dict) -> None:
    """Atomically: a temp file of its own (two writers never share one), fsync, rename, fsync of the folder."""
    write_atomic(jobs_path(workdir), json.dumps(record, ensure_ascii=False, indent=2))


def recorded_job_ids(record: dict) -> list[str]:
    """Every job id of every chain (and of "stages"), first seen first, once each."""
    ids: dict[str, None] = {}
    for chain in [*record.get("chains", []), {"stages": record.get("stages", {})}]:
        for entries in chain["stages"].values():
            ids.update((str(e["id"]), None) for e in entries)
    return list(ids)


class Chain:
    """One new submission: `add` each job as it is submitted; jobs.json is rewritten after each one, so a
    submission that fails halfway still leaves the ids it got on record."""

    def __init__(self, workdir: str | os.PathLike, stages: list[str], replaces: list[str]):
        self.workdir = workdir
        self.record = read_record(workdir)
        self.entry = {"chain": len(self.record["chains"]) + 1, "submitted_at": time.time(),
                      "stages": {stage: [] for stage in stages}, "replaces": replaces}
        self.record["chains"].append(self.entry)
        for stage in stages:
            self.record["stages"][stage] = []

    def add(self, stage: str, job: dict) -> None:
        self.entry["stages"][stage].append(job)
        self.record["stages"][stage].append(job)
        write_record(self.workdir, self.record)


# ------------------------------------------------------------------ queued jobs
def _run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def queued_jobs(ids: list[str]) -> dict[str, str]:
    """{recorded id: state} for those of `ids` still in the queue (pending, running, completing, held, ...).
    An array counts by its array id (any of its tasks queued). Raises RuntimeError when squeue fails."""
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%A|%F|%T"])  # the submitter's own jobs
    if out.returncode:
        raise RuntimeError(f"squeue failed: {out.stderr.strip() or out.stdout.strip()}")
    wanted, found = set(ids), {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job, array, state = parts
        for candidate in (job, array):
            if candidate in wanted:
                found.setdefault(candidate, state)
    return {i: found[i] for i in ids if i in found}


def refuse_if_queued(workdir: str | os.PathLike, force: bool, retry_hint: str = "--force-submit") -> list[str]:
    """Before a new chain: raise JobsStillQueued naming the queued jobs of earlier chains, or, with force, return
    their ids (the new chain records them as replaced) after a warning."""
    record = read_record(workdir)
    try:
        active = queued_jobs(recorded_job_ids(record))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise RecipeError(f"{jobs_path(workdir)}: cannot tell whether the recorded jobs are still queued ({exc}); "
                          "nothing submitted") from exc
    if not active:
        return []
    listing = ", ".join(f"{i} ({state})" for i, state in active.items())
    if not force:
        raise JobsStillQueued(
            f"{Path(workdir) / 'slurm'}: job(s) of an earlier submission for this workdir are still queued: {listing}. "
            f"A second chain would write the same stage folders. Cancel them first (kamado slurm cancel RECIPE), "
            f"or submit anyway with {retry_hint} (the old chain stays in jobs.json)", active)
    print(f"[kamado] warning: {retry_hint}: job(s) {listing} of an earlier submission are still queued; "
          "submitting a new chain anyway (jobs.json keeps the old one; kamado slurm cancel cancels both)", file=sys.stderr)
    return list(active)


# ------------------------------------------------------------------ command line for submit.sh
def main(argv: list[str]) -> int:
    """prepare WORKDIR | check WORKDIR [--force] | record WORKDIR PLAN_JSON ID... (see the module docstring). The lock is submit.sh's
    (flock on <workdir>/slurm/submit.lock around the whole script), so these do not take it."""
    try:
        if argv[:1] == ["prepare"] and len(argv) == 2:
            private_slurm_dir(argv[1])
            return 0
        if argv[:1] == ["check"] and len(argv) in (2, 3):
            replaced = refuse_if_queued(argv[1], force=argv[2:] == ["--force"], retry_hint="bash submit.sh --force-submit")
            print(" ".join(replaced))  # submit.sh passes these on to `record`
            return 0
        if argv[:1] == ["record"] and len(argv) >= 3:
            plan = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
            ids = argv[3:]
            if len(ids) != len(plan["jobs"]):
                raise RecipeError(f"record: {len(plan['jobs'])} job ids expected, got {len(ids)}")
            replaces = os.environ.get("KAMADO_REPLACES", "").split()
            chain = Chain(argv[1], plan["stages"], replaces)
            now = time.time()
            for job, job_id in zip(plan["jobs"], ids):
                chain.add(job["stage"], {**job["entry"], "id": job_id, "submitted_at": now})
            return 0
    except JobsStillQueued as exc:
        print(f"kamado: error: {exc}", file=sys.stderr)
        return 3
    except RecipeError as exc:
        print(f"kamado: error: {exc}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
