"""What a kill can leave in a checkpoint folder, put right before a resume: the on-disk states of every step of a
save (the kill tests hit them by timing; here each is built exactly), `latest` fallbacks, and pruning that deletes
only kamado's own checkpoints."""

import json

import pytest

from kamado.train.checkpoint import MANIFEST, META, CheckpointManager, NoCompleteCheckpoint, resume_tag, tag_for


def fake_checkpoint(folder, step, payload=b"weights", name=None):
    """A checkpoint folder as CheckpointManager.save leaves it: two rank files, kamado.json, MANIFEST.json."""
    path = folder / (name or tag_for(step))
    path.mkdir(parents=True)
    (path / "mp_rank_00_model_states.pt").write_bytes(payload)
    (path / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(payload * 3)
    (path / META).write_text(json.dumps({"step": step}))
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    (path / MANIFEST).write_text(json.dumps({"step": step, "files": files}))
    return path


def manager(folder, keep=2):
    return CheckpointManager(folder, keep=keep, rank=0, identity={})


def test_kill_between_moving_the_old_copy_aside_and_installing_the_new(tmp_path):
    fake_checkpoint(tmp_path, 4)
    fake_checkpoint(tmp_path, 5, name="replaced-step0000005")  # the complete old copy, moved aside
    fake_checkpoint(tmp_path, 5, b"new", name="tmp-step0000005")  # the new copy, not yet renamed
    (tmp_path / "latest").write_text("step0000005")
    manager(tmp_path).recover()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step0000004", "step0000005"]
    assert (tmp_path / "step0000005" / "mp_rank_00_model_states.pt").read_bytes() == b"weights"
    assert resume_tag(tmp_path) == ("step0000005", None)


def test_kill_after_the_new_copy_is_in_place(tmp_path):
    fake_checkpoint(tmp_path, 5, b"new")
    fake_checkpoint(tmp_path, 5, name="replaced-step0000005")
    (tmp_path / "latest").write_text("step0000005")
    manager(tmp_path).recover()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step0000005"]
    assert (tmp_path / "step0000005" / "mp_rank_00_model_states.pt").read_bytes() == b"new"


def test_half_deleted_copies_are_removed_never_restored(tmp_path):
    fake_checkpoint(tmp_path, 3)
    aside = fake_checkpoint(tmp_path, 5, name="replaced-step0000005")
    (aside / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()  # a kill while deleting it
    fake_checkpoint(tmp_path, 4, name="deleting-step0000004")
    (tmp_path / ".latest.tmp-123").write_text("step0000005")
    (tmp_path / "latest").write_text("step0000005")
    manager(tmp_path).recover()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step0000003"]
    tag, warning = resume_tag(tmp_path)
    assert tag == "step0000003" and "names step0000005, which does not exist" in warning


def test_latest_naming_a_checkpoint_with_a_missing_rank_file_falls_back(tmp_path):
    fake_checkpoint(tmp_path, 3)
    newest = fake_checkpoint(tmp_path, 4)
    (newest / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    (tmp_path / "latest").write_text("step0000004")
    tag, warning = resume_tag(tmp_path)
    assert tag == "step0000003"
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt is missing" in warning


def test_checkpoints_that_exist_but_none_complete_are_an_error_not_step_0(tmp_path):
    broken = fake_checkpoint(tmp_path, 4)
    (broken / MANIFEST).unlink()
    with pytest.raises(NoCompleteCheckpoint, match="step0000004.*MANIFEST.json is missing"):
        resume_tag(tmp_path)
    assert resume_tag(tmp_path / "nothing-yet") == (None, None)


def test_pruning_deletes_only_kamado_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        fake_checkpoint(tmp_path, step)
    user = tmp_path / "step0000000"  # a folder of the user's with a checkpoint-like name but no kamado.json
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    best = tmp_path / "best"
    best.mkdir()
    manager(tmp_path, keep=2)._prune(keep_tag="step0000004")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step0000000", "step0000003", "step0000004"]
    assert (user / "notes.txt").read_text() == "mine"


def test_keep_checkpoints_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep_checkpoints must be at least 1"):
        manager(tmp_path, keep=0)


def test_a_deferred_prune_keeps_the_newest_and_what_latest_names(tmp_path):
    for step in (1, 2, 3, 4):  # PPO's value checkpoints: saved unpruned, pruned once the policy committed
        fake_checkpoint(tmp_path, step)
    (tmp_path / "latest").write_text("step0000004")
    manager(tmp_path, keep=2).prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step0000003", "step0000004"]
