"""A full disk during a save, a missing or corrupt `latest`, a truncated rank file, and a finished run extended by
raising max_steps (wsd: bit-identical to a run planned that long; cosine: trains on, the lr never jumps up)."""

import pytest

pytestmark = [pytest.mark.slow]  # one harness process: ~25 s of imports, then ~12 forked training lives


def test_full_disk_is_a_clear_error_and_the_previous_checkpoint_is_used(fault_report):
    r = fault_report["full_disk"]
    assert r["first_exit"] == 0 and r["unbroken_error"] is None
    assert r["error"] is not None and "CheckpointWriteError" in r["error"]
    assert "tmp-step0000006" in r["error"]  # names the path it could not write
    assert "step0000004 is intact" in r["error"]
    assert r["previous_changed"] == [] and r["previous_problem"] is None  # byte for byte as before
    assert r["latest_after_failure"] == "step0000004"
    assert r["resume_error"] is None and r["resumed_at"] == 4
    # the extension (max_steps 4 -> 8, wsd decay not begun) trains exactly like a run planned with 8 steps
    assert r["losses_equal_unbroken"]


@pytest.mark.parametrize("case", ["missing", "garbage", "truncated-newest"])
def test_bad_latest_falls_back_to_the_newest_complete_checkpoint(fault_report, case):
    r = fault_report["latest"][case]
    assert r["error"] is None
    assert r["warned"], r
    if case == "truncated-newest":  # step 4's rank file is cut: step 3 is the newest complete one
        assert r["resumed_at"] == 3 and "has" in r["warning"] and "bytes, the manifest says" in r["warning"]
    else:
        assert r["resumed_at"] == 4


def test_cosine_extension_trains_on_without_an_lr_jump(fault_report):
    r = fault_report["cosine_extension"]
    assert r["error"] is None and r["resumed_at"] == 6 and r["done"] == "9"
    assert r["steps"] == list(range(1, 10))
    lrs = [r["lrs"][str(s)] for s in range(6, 10)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(lrs, lrs[1:])), lrs  # never up after the resume
