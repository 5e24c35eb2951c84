"""The harness (tests/reliability/harness.py) runs once per scenario per session; tests assert on its report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def run_scenario(name: str, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp(name)
    out = work / "report.json"
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.harness", name, str(out), str(work / "w")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    report["work"] = str(work / "w")
    return report


@pytest.fixture(scope="session")
def kill_report(tmp_path_factory) -> dict:
    return run_scenario("kills", tmp_path_factory)


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory) -> dict:
    return run_scenario("faults", tmp_path_factory)
