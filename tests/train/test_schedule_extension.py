"""What the lr schedule does when a run is resumed with a larger max_steps (see kamado/train/schedule.py)."""

import pytest

from kamado.train.config import TrainConfig
from kamado.train.schedule import ScheduleMismatch, SchedulePlan, lr_multiplier, resume_plan


def cfg(**kw):
    return TrainConfig(**{"warmup_steps": 10, "min_lr_ratio": 0.1, "decay_fraction": 0.2, **kw})


def saved(kind, max_steps, at=None, to=None):
    """The plan a checkpoint holds: trained to max_steps, optionally already extended once (at -> to)."""
    plan = SchedulePlan.from_config(cfg(schedule=kind, max_steps=max_steps))
    return plan.resumed(at, to).to_dict() if at is not None else plan.to_dict()


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_same_max_steps_resumes_the_same_plan(kind):
    plan, note = resume_plan(saved(kind, 300), cfg(schedule=kind, max_steps=300), step=150)
    assert note is None and plan == SchedulePlan.from_config(cfg(schedule=kind, max_steps=300))


def test_wsd_extended_in_its_stable_phase_is_the_longer_plan_exactly():
    plan, note = resume_plan(saved("wsd", 300), cfg(schedule="wsd", max_steps=600), step=200)
    longer = lr_multiplier(cfg(schedule="wsd", max_steps=600))
    assert [plan(s) for s in range(200, 601)] == [longer(s) for s in range(200, 601)]
    assert plan(479) == 1.0 and plan(600) == pytest.approx(0.1)  # the decay moved to the new end
    assert "same as a run planned with 600 steps" in note


@pytest.mark.parametrize("kind, step", [("wsd", 270), ("wsd", 300), ("cosine", 150), ("cosine", 300)])
def test_extended_after_the_decay_began_goes_on_from_the_lr_reached(kind, step):
    old = SchedulePlan.from_dict(saved(kind, 300))
    plan, note = resume_plan(old.to_dict(), cfg(schedule=kind, max_steps=600), step=step)
    assert plan(step) == pytest.approx(old(step))  # no jump at the resume step
    values = [plan(s) for s in range(step, 601)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))  # never up again, no re-warmup
    assert plan(600) == pytest.approx(0.1)
    assert "re-stretched" in note


def test_a_finished_cosine_run_trains_on_at_its_floor():
    plan, _ = resume_plan(saved("cosine", 300), cfg(max_steps=400), step=300)
    assert {round(plan(s), 12) for s in range(300, 401)} == {0.1}


def test_extending_twice_is_reproduced_from_the_saved_plan():
    twice, _ = resume_plan(saved("cosine", 300, at=300 - 100, to=400), cfg(max_steps=500), step=350)
    again, note = resume_plan(twice.to_dict(), cfg(max_steps=500), step=420)
    assert note is None and again == twice  # a resume inside the second extension keeps its plan


def test_other_schedule_keys_may_not_change_on_resume():
    with pytest.raises(ScheduleMismatch, match="schedule=cosine.*schedule=wsd.*Only max_steps may change"):
        resume_plan(saved("cosine", 300), cfg(schedule="wsd", max_steps=300), step=100)


def test_lr_multiplier_is_a_plain_function_so_lambdalr_keeps_no_plan_state():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(cfg(max_steps=100)))
    assert sched.state_dict()["lr_lambdas"] == [None]
