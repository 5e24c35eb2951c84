"""`--dry-run` on a machine without a reachable cluster (a laptop), and the permissions of `<workdir>/slurm`,
which holds the pickled calls the jobs run as the submitter. No cluster needed."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from kamado.cli import main
from kamado.recipe import load_recipe
from kamado.slurm.dry_run import dry_run_folder
from tests.slurm.test_executor import write_recipe


@pytest.mark.parametrize("setting", ["no-slurm-commands", "slurm-conf-nowhere"])
def test_dry_run_writes_the_scripts_without_a_cluster(tmp_path, monkeypatch, capsys, setting):
    path = write_recipe(tmp_path, 20)
    if setting == "no-slurm-commands":
        (tmp_path / "bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sinfo, sbatch, scontrol
        why = "not on PATH"
    else:  # the commands are there, the cluster is not (old code: sinfo failed, or hung for a minute, then failed)
        monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nowhere" / "slurm.conf"))
        why = "is not a file"
    sets = ["--set", "slurm.partition=null"] if setting == "no-slurm-commands" else []
    assert main(["run", str(path), "--executor", "slurm", "--dry-run", "--until", "tokenizer", *sets]) == 0
    out = capsys.readouterr().out
    skipped = next(ln for ln in out.splitlines() if ln.startswith("[kamado] dry run without a reachable cluster"))
    assert why in skipped and "skipped the cluster checks" in skipped and "assumed Slurm's default 1001" in skipped
    folder = dry_run_folder(load_recipe(path))
    scripts = {p.name: p.read_text() for p in folder.glob("*.sbatch")}
    assert sorted(scripts) == ["01-corpus-filter.sbatch", "02-corpus-finish.sbatch", "03-tokenizer-stage.sbatch"]
    partition_lines = [ln for s in scripts.values() for ln in s.splitlines() if ln.startswith("#SBATCH --partition")]
    if setting == "no-slurm-commands":
        assert partition_lines == [] and "assumed partition (none: sbatch takes the cluster default)" in skipped
    else:
        assert partition_lines == ["#SBATCH --partition=debug"] * 3
    assert "#SBATCH --array=0-3%4" in scripts["01-corpus-filter.sbatch"]
    assert subprocess.run(["/bin/bash", "-n", str(folder / "submit.sh")]).returncode == 0  # valid shell
    assert not (tmp_path / "run-slurm" / "slurm" / "jobs.json").exists()


def test_slurm_folder_is_created_private(tmp_path, capsys):
    path = write_recipe(tmp_path, 20)
    old = os.umask(0o002)  # a umask that would leave it group-writable
    try:
        assert main(["corpus", str(path), "--executor", "slurm", "--dry-run", "--set", "slurm.partition=debug"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run-slurm" / "slurm").stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_slurm_folder_writable_by_others_is_refused(tmp_path, capsys, mode):
    path = write_recipe(tmp_path, 20)
    folder = tmp_path / "run-slurm" / "slurm"
    folder.mkdir(parents=True)
    folder.chmod(mode)
    assert main(["corpus", str(path), "--executor", "slurm", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: group- or world-writable (mode {mode:04o})" in err and f"chmod 700 {folder}" in err, err
    assert list(folder.iterdir()) == []  # no pickle written into it
    assert stat.S_IMODE(folder.stat().st_mode) == mode  # not "fixed" behind the user's back
