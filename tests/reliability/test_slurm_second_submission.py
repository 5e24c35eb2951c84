"""A second `kamado run --executor slurm` while the first chain is still queued, on the real local cluster.

The first chain is held (`--hold` in slurm.extra_sbatch), so it stays PENDING for as long as the test needs. The
workdir's name holds a space, a quote and `$(touch PWNED)`: nothing in the scripts or submit.sh may run it."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from kamado.cli import main
from tests.slurm.test_executor import wait_until_idle, write_recipe

pytestmark = pytest.mark.slurm


def queued() -> dict[str, str]:
    """{job or array id: comment} of every job in the queue."""
    out = subprocess.run(["squeue", "-h", "-o", "%F|%k"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


def chains(workdir: Path) -> list[dict]:
    return json.loads((workdir / "slurm" / "jobs.json").read_text())["chains"]


def test_second_submission_is_refused_while_the_first_chain_is_queued(slurm_cluster, tmp_path, capsys):
    path = write_recipe(tmp_path, 20, extra="""  extra_sbatch: ['--hold', '--comment="my run"']\n""")
    workdir = tmp_path / "run $(touch PWNED) 'q'"
    args = ["corpus", str(path), "--executor", "slurm", "--workdir", str(workdir)]
    assert main(args) == 0
    first = [j["id"] for j in chains(workdir)[0]["stages"]["corpus"]]
    assert len(first) == 2 and queued() == {first[0]: "my run", first[1]: "my run"}  # the quoted value kept whole
    try:
        capsys.readouterr()
        before = (workdir / "slurm" / "jobs.json").read_bytes()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"still queued: {first[0]} (PENDING), {first[1]} (PENDING)" in err, err
        assert "kamado slurm cancel" in err and "--force-submit" in err
        assert (workdir / "slurm" / "jobs.json").read_bytes() == before and set(queued()) == set(first)

        # The dry run's submit.sh refuses the same way (it does the same check under the same lock).
        assert main([*args, "--dry-run"]) == 0
        submit_sh = workdir / "slurm" / "dry-run" / "submit.sh"
        run = subprocess.run(["bash", str(submit_sh)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert run.returncode == 3 and f"{first[0]} (PENDING), {first[1]} (PENDING)" in run.stderr, run.stderr
        assert set(queued()) == set(first)

        # Forced: a second chain, and jobs.json keeps the first one, marked as replaced.
        assert main([*args, "--force-submit"]) == 0
        record = json.loads((workdir / "slurm" / "jobs.json").read_text())
        second = [j["id"] for j in record["stages"]["corpus"]]
        assert [c["chain"] for c in record["chains"]] == [1, 2] and record["chains"][1]["replaces"] == first
        assert [j["id"] for j in record["chains"][0]["stages"]["corpus"]] == first
        assert set(queued()) == set(first + second) and not set(first) & set(second)
        capsys.readouterr()
        assert main(["slurm", "status", str(path), "--workdir", str(workdir)]) == 0
        assert f"earlier chains still queued: {first[0]} (PENDING), {first[1]} (PENDING)" in capsys.readouterr().out

        assert main(["slurm", "cancel", str(path), "--workdir", str(workdir)]) == 0  # both chains
        out = capsys.readouterr().out
        assert all(i in out.splitlines()[-1] for i in first + second), out[-2000:]
        wait_until_idle(time.monotonic() + 30)

        # Nothing queued any more: submit.sh submits, prints the workdir as it is, appends a third chain.
        run = subprocess.run(["bash", str(submit_sh)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert run.returncode == 0, run.stderr
        assert f"[kamado] logs: {workdir / 'slurm'}; follow with" in run.stdout
        third = [j["id"] for j in chains(workdir)[2]["stages"]["corpus"]]
        assert set(queued()) == set(third) and len(third) == 2
        run = subprocess.run(["bash", str(submit_sh), "--force-submit"], capture_output=True, text=True, cwd=tmp_path,
                             timeout=60)
        assert run.returncode == 0 and "bash submit.sh --force-submit" in run.stderr, run.stderr  # the warning
        assert chains(workdir)[3]["replaces"] == third and len(queued()) == 4
    finally:
        subprocess.run(["scancel", *queued()], capture_output=True)
        wait_until_idle(time.monotonic() + 30)
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
