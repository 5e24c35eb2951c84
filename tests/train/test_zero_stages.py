"""Other DeepSpeed settings than the demo's, for real on 2 CPU ranks: ZeRO-3 (partitioned build, consolidation
from the partitioned checkpoint, activation checkpointing, WSD), ZeRO-1 with bf16 and gradient accumulation,
ZeRO-0; and continued pretraining from a checkpoint with a grown vocabulary."""

import json
import shutil

import numpy as np
import pytest
import torch

from kamado.local import run_stages

from kamado.stage import Workspace
from tests.helpers import tiny_recipe

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
SHORT = ["pretrain.max_steps=12", "pretrain.checkpoint_every=1000", "pretrain.log_every=1000", "pretrain.warmup_steps=2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("zero")
    recipe = tiny_recipe(base, *SHORT, workdir="base")
    run_stages(recipe, ["corpus", "tokenizer"], lambda s: None)
    return base


def run_pretrain(base, name, *overrides):
    for stage in ("corpus", "tokenizer"):
        shutil.copytree(base / "base" / stage, base / name / stage)
    recipe = tiny_recipe(base, *SHORT, *overrides, workdir=name)
    run_stages(recipe, ["pretrain"], lambda s: None)
    ws = Workspace(recipe)
    rows = [json.loads(x) for x in (ws.stage_dir("pretrain") / "metrics.jsonl").read_text().splitlines()]
    return ws, [r for r in rows if "loss" in r]


def reference_parity(ws) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = ws.stage_dir("pretrain") / "hf"
    tok = AutoTokenizer.from_pretrained(str(hf), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(hf), local_files_only=True, dtype=torch.float32).eval()
    ref = torch.load(ws.stage_dir("pretrain") / "reference_logits.pt")
    with torch.no_grad():
        return max((model(input_ids=tok(p, return_tensors="pt")["input_ids"]).logits - l).abs().max().item()
                   for p, l in zip(ref["prompts"], ref["logits"]))


@pytest.mark.parametrize("name,overrides,tolerance", [
    ("zero3", ["pretrain.zero_stage=3", "pretrain.activation_checkpointing=true", "pretrain.schedule=wsd"], 1e-4),
    ("zero1-bf16", ["pretrain.zero_stage=1", "pretrain.precision=bf16", "pretrain.grad_accum=2"], 0.5),
    ("zero0", ["pretrain.zero_stage=0"], 1e-4),
])
def test_zero_stage_trains_and_consolidates(prepared, name, overrides, tolerance):
    ws, rows = run_pretrain(prepared, name, *overrides)
    assert len(rows) == 12 and all(np.isfinite(r["loss"]) for r in rows)
    assert np.mean([r["loss"] for r in rows[-3:]]) < rows[0]["loss"] - 0.3
    ds = json.loads((ws.stage_dir("pretrain") / "deepspeed_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == int(name[4])
    # the consolidated fp32 export reproduces the training model's logits (bf16 training: its rounding)
    assert reference_parity(ws) <= tolerance
    assert (ws.stage_dir("pretrain") / "loss.png").stat().st_size > 1000


def test_continued_pretraining_grows_embeddings_from_the_mean(prepared, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from kamado.tokenizer.export import load_hf

    vocab = len(load_hf(Workspace(tiny_recipe(prepared, workdir="base")).tokenizer_dir()))
    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(vocab_size=vocab - 100, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    small.save_pretrained(tmp_path / "base-model")
    old_mean = small.get_input_embeddings().weight.mean(0)
    ws, rows = run_pretrain(prepared, "continued", f"pretrain.model.init_from={tmp_path / 'base-model'}", "pretrain.lr=1e-3")
    result = json.loads((ws.stage_dir("pretrain") / "result.json").read_text())
    assert result["embedding_rows_added"] == 100 and len(rows) == 12
    # after 12 steps at lr 1e-3 the new rows are still close to the old mean they started from
    grown = AutoModelForCausalLM.from_pretrained(str(ws.stage_dir("pretrain") / "hf"), local_files_only=True)
    new_rows = grown.get_input_embeddings().weight[vocab - 100:]
    assert new_rows.shape[0] == 100
    assert (new_rows - old_mean).abs().max().item() < 0.05


def test_nonfinite_steps_are_skipped_then_the_run_stops_with_a_checkpoint(prepared):
    """An absurd learning rate without clipping blows the gradients up: every such step is skipped (no update),
    counted, and after max_nonfinite_in_a_row the run saves a checkpoint and stops instead of training on."""
    with pytest.raises(RuntimeError, match=r"stopped \(nonfinite\)"):
        run_pretrain(prepared, "nonfinite", "pretrain.lr=1e6", "pretrain.grad_clip=0", "pretrain.max_nonfinite_in_a_row=3",
                     "pretrain.max_steps=40")
    ws = Workspace(tiny_recipe(prepared, workdir="nonfinite"))
    rows = [json.loads(x) for x in (ws.stage_dir("pretrain") / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_nonfinite", False) for r in rows[-3:]] == [True, True, True]
    stopped = json.loads((ws.stage_dir("pretrain") / "STOPPED.json").read_text())
    assert stopped["reason"] == "nonfinite" and stopped["step"] == len(rows) < 40
    assert (ws.stage_dir("pretrain") / "checkpoints" / f"step{stopped['step']:07d}").is_dir()
    assert not (ws.stage_dir("pretrain") / "DONE.json").exists()
