"""Schedules, the DeepSpeed config and its raw extras, the data mixture, spikes, checkpoint identity."""

import json

import numpy as np
import pytest

from kamado.train.config import TrainConfig
from kamado.train.checkpoint import CheckpointManager, IncompatibleCheckpoint
from kamado.train.data import Mixture
from kamado.train.dsconfig import DeepSpeedConfigConflict, deepspeed_config
from kamado.train.metrics import flops_per_token
from kamado.train.schedule import lr_multiplier
from kamado.train.stability import NonFiniteGuard, SpikeDetector


def test_cosine_and_wsd_schedules():
    cos = lr_multiplier(TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)
    wsd = lr_multiplier(TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2))
    assert wsd(10) == wsd(79) == 1.0
    assert wsd(90) == pytest.approx(0.5) and wsd(100) == pytest.approx(0.0)


def test_deepspeed_config_from_recipe_and_extras():
    cfg = TrainConfig(zero_stage=3, micro_batch_size=2, grad_accum=4, offload_optimizer=True, offload_params=True,
                      precision="bf16", deepspeed_extra={"zero_optimization": {"overlap_comm": True}, "comms_logger": {"enabled": False}})
    ds = deepspeed_config(cfg, world_size=8)
    assert ds["train_batch_size"] == 64 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": False},
                                       "offload_param": {"device": "cpu", "pin_memory": False}, "overlap_comm": True}
    assert ds["comms_logger"] == {"enabled": False}
    bad = TrainConfig(deepspeed_extra={"zero_optimization": {"stage": 1}})
    with pytest.raises(DeepSpeedConfigConflict, match="zero_optimization.stage"):
        deepspeed_config(bad, world_size=2, stage="pretrain")


def test_mixture_follows_weights_and_covers_each_source():
    mix = Mixture([50, 1000], [3.0, 1.0], seed=7)
    picks = [mix(i) for i in range(20_000)]
    share = np.mean([s == 0 for s, _ in picks])
    assert share == pytest.approx(0.75, abs=0.02)
    first_epoch = [j for s, j in picks if s == 0][:50]
    assert sorted(first_epoch) == list(range(50))  # every sample of a source once per its epoch
    again = Mixture([50, 1000], [3.0, 1.0], seed=7)
    assert [again(i) for i in range(19_990, 20_000)] == picks[-10:]  # a resumed loader jumps straight there


def test_spikes_and_nonfinite_guard():
    detect = SpikeDetector(sigma=4.0, warmup=10)
    rng = np.random.default_rng(0)
    assert not any(detect(3.0 + 0.01 * rng.standard_normal()) for _ in range(30))
    assert detect(3.5)
    guard = NonFiniteGuard(limit=2)
    guard.record(False)
    guard.record(True)
    guard.record(False)
    assert not guard.exhausted
    guard.record(False)
    assert guard.exhausted and guard.total == 3


def test_flops_per_token():
    assert flops_per_token(1_000_000, 2, 64, 128) == 6e6 + 12 * 2 * 64 * 128
    assert flops_per_token(1_000_000, 2, 64, 128, embedding_params=64_000) == 6 * 936_000 + 12 * 2 * 64 * 128


def test_checkpoint_identity_mismatch_is_a_clear_error(tmp_path):
    (tmp_path / "step0000010").mkdir()
    (tmp_path / "step0000010" / "kamado.json").write_text(json.dumps({"world_size": 4, "zero_stage": 2, "step": 10}))
    (tmp_path / "latest").write_text("step0000010")
    mgr = CheckpointManager(tmp_path, keep=2, rank=0, identity={"world_size": 2, "zero_stage": 2})
    with pytest.raises(IncompatibleCheckpoint, match="world_size=4.*world_size=2"):
        mgr.check("step0000010")


def test_nccl_environment_and_known_bad_settings():
    from kamado.train.nccl import nccl_environment, nccl_warnings

    env = {"NCCL_IB_HCA": "mlx5_0,mlx5_1", "NCCL_IB_DISABLE": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "0"}
    shown = nccl_environment(env)
    assert shown["NCCL_IB_HCA"] == "mlx5_0,mlx5_1" and shown["NCCL_SOCKET_IFNAME"] == "unset"
    warnings = nccl_warnings(env)
    assert len(warnings) == 2 and "TCP sockets" in warnings[0] and "hangs the job" in warnings[1]
    assert nccl_warnings({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "3"}) == []
