"""SIGKILL of a training process (DeepSpeed ZeRO-2, one gloo rank) at >= 20 delays during checkpoint saves, and
during saves of a step that already has a checkpoint: every rerun resumes from a complete checkpoint no older than
the newest one saved, nothing saved is lost, and the per-step losses equal an unbroken run's bit for bit."""

import pytest

pytestmark = [pytest.mark.slow]  # one harness process: ~25 s of imports, then ~30 forked training lives


def test_kills_during_save_lose_nothing_and_resume_exactly(kill_report):
    r = kill_report
    assert r["problems"] == []
    kills = r["kills"]
    in_save = [k for k in kills if k["in_save"]]
    assert len(in_save) >= 20, kills
    assert len({k["delay"] for k in in_save}) >= 20  # different delays, not one repeated
    # the kills reached the different phases of a save, not only the DeepSpeed writes
    states = {k["state"] for k in in_save}
    assert {"rank files being written"} < states, states
    assert all(k["bytes_lost"] == 0 for k in kills)
    assert all(k["resumed_next_at"] >= 0 for k in kills)
    assert r["final_exit"] == 0
    steps = [s for s, _ in r["got_losses"]]
    assert steps == list(range(1, r["steps"] + 1))  # each step once: the torn/duplicated records were cut
    assert r["losses_equal"], (r["expected_losses"], r["got_losses"])
    assert r["final_records"] == 1 and r["torn_lines_left"] == 0
    # only kamado's own names are left: no tmp-, replaced- or deleting- folder survives the reruns
    assert [n for n in r["checkpoint_folder"] if n.startswith(("tmp-", "replaced-", "deleting-", ".latest"))] == []


def test_resave_of_the_same_step_killed_keeps_a_complete_copy(kill_report):
    resaves = [k for k in kill_report["kills"] if k["kind"] == "resave"]
    assert len(resaves) >= 5
    assert all(k["resumed_next_at"] == kill_report["steps"] for k in resaves), resaves
