"""SIGKILL during the release stage at delays spread over an unbroken release: nothing half-written is ever marked
done, every rerun completes with a complete release, what a killed run left (a partial folder, an older release
set aside) is cleaned up, and nothing the user put in or next to the release folder is touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.release.conftest import make_untrained_release_recipe

KILLS = 8


@pytest.mark.slow  # 8 killed releases and 9 complete ones (~2 s each) after the fixtures (~40 s)
def test_sigkill_during_release_never_leaves_a_half_release_marked_done(tok_recipe, random_model_dir, tmp_path):  # noqa: F811
    recipe = make_untrained_release_recipe(tok_recipe, random_model_dir, tmp_path)
    release = Path(recipe.workdir) / "release"
    (tmp_path / "beside-workdir.txt").write_text("keep me too\n")  # the harness adds files in the release folder
    out = tmp_path / "findings.json"
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.release_kill_harness", recipe.workdir, str(out), str(KILLS)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    log = Path(f"{recipe.workdir}.release-lives.log")
    assert proc.returncode == 0, proc.stderr[-3000:] + (log.read_text()[-3000:] if log.is_file() else "")
    findings = json.loads(out.read_text())
    assert findings["unbroken_rc"] == 0, log.read_text()[-3000:]
    cycles = findings["cycles"]
    assert len(cycles) == KILLS and sum(c["killed"] for c in cycles) >= KILLS - 2  # the last delays may reach the end
    for c in cycles:
        k = c["after_kill"]
        assert not k["done"] or (k["final"] and not k["final_missing"]), c  # marked done => complete
        assert c["rerun_rc"] == 0, (c, log.read_text()[-3000:])
        r = c["after_rerun"]
        assert r["done"] and r["final"] and not r["final_missing"] and not r["partial"] and not r["old"], c
    # bytes of user data lost: 0
    assert (release / "user.txt").read_text() == "keep me\n"
    assert (release / "my-notes" / "todo.txt").read_text(encoding="utf-8") == "公開前に確認すること\n"
    assert (tmp_path / "beside-workdir.txt").read_text() == "keep me too\n"
    left = sum(c["after_kill"]["partial"] or c["after_kill"]["old"] for c in cycles)
    print(f"release kills: {sum(c['killed'] for c in cycles)} injected ({left} left a partial or set-aside folder), "
          f"{sum(c['rerun_rc'] == 0 for c in cycles)} reruns completed, unbroken release {findings['unbroken_s']} s, "
          f"user bytes lost 0")
