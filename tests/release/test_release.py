"""The release stage on the tiny pipeline run (the session's `tiny_run`, shared with tests/test_pipeline.py: DeepSpeed
ZeRO-2 on 2 CPU ranks): offline loading with logits parity, a card with the run's numbers, consolidation straight
from DeepSpeed checkpoints, and clear errors that leave nothing looking complete. Releases other than the
pipeline's own are made in a copy of its workdir, so the shared run is never changed."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from kamado.eval.config import EvalTaskConfig
from kamado.release.consolidate import CheckpointError
from kamado.local import run_stages
from kamado.stage import Workspace
from tests.helpers import EXAMPLES

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
SAMPLE = EXAMPLES / "eval"


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
    """A copy of the tiny run's workdir (done markers and all) and its recipe pointed at it."""
    workdir = tmp_path_factory.mktemp("rel") / "run"
    shutil.copytree(tiny_run.workdir, workdir)
    recipe = copy.deepcopy(tiny_run)
    recipe.workdir = str(workdir)
    return recipe


def _with(recipe, **release):
    r = copy.deepcopy(recipe)
    r.eval.enabled = False  # these releases test consolidation and export; evaluation has its own tests
    for k, v in release.items():
        setattr(r.release, k, v)
    return r


def _load(out):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoTokenizer.from_pretrained(str(out), local_files_only=True),
            AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval())


def _release(recipe):
    run_stages(recipe, ["release"], log=lambda _: None)
    return Workspace(recipe).stage_dir("release") / recipe.release.model_name


def test_release_loads_offline_with_logits_parity_and_chat_template(tiny_run):
    from kamado.finetune.data import format_prompt

    ws = Workspace(tiny_run)
    out = ws.stage_dir("release") / tiny_run.release.model_name
    tok, model = _load(out)
    ref = torch.load(ws.stage_dir("dpo") / "reference_logits.pt", weights_only=True)
    with torch.no_grad():
        for prompt, logits in zip(ref["prompts"], ref["logits"]):
            got = model(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits
            assert (got - logits).abs().max().item() <= 1e-4
    assert not (ws.stage_dir("release") / f".{tiny_run.release.model_name}.partial").exists()
    # the chat template (the tokenizer stage's, else the release's) reproduces the SFT prompt
    chat = tok.apply_chat_template([{"role": "user", "content": "挨拶をしてください。"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith(format_prompt("挨拶をしてください。")) and len(chat) <= len(format_prompt("挨拶をしてください。")) + len(tok.bos_token)


def test_model_card_holds_the_runs_numbers(trained):
    import yaml

    recipe = copy.deepcopy(trained)
    recipe.eval.tasks.append(EvalTaskConfig(name="jcommonsenseqa", path=str(SAMPLE / "jcommonsenseqa-sample.jsonl"), limit=6))
    out = _release(recipe)
    ws = Workspace(recipe)
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["language"] == ["ja"] and meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "text-generation"
    assert meta["datasets"] == [s.name for s in recipe.corpus.sources]
    report = json.loads((ws.stage_dir("corpus") / "report.json").read_text())
    tok_eval = json.loads((ws.stage_dir("tokenizer") / "eval.json").read_text())
    evals = json.loads((ws.stage_dir("release") / "eval" / "results.json").read_text())
    assert f"kept {report['docs_kept']:,}" in card
    for reason, n in report["dropped"].items():
        assert f"| {reason} |" in card and f"| {n:,} |" in card
    assert f"min_chars={report['rules']['min_chars']}" in card
    for stage in ("pretrain", "sft", "dpo"):
        result = json.loads((ws.stage_dir(stage) / "result.json").read_text())
        assert f"| {stage} | {result['steps']} | {result['tokens_trained']:,} |" in card
        assert f"{6.0 * result['parameters'] * result['tokens_trained']:.3e}" in card  # FLOPs ≈ 6·N·D
        assert f"{result['seconds'] * result['world_size'] / 3600:.4g} CPU-hours" in card
    assert f"{tok_eval['chars_per_token']:.4g} characters/token" in card
    jcqa = next(t for t in evals["tasks"] if t["task"] == "jcommonsenseqa")
    assert jcqa["items"] == 6 and f"| jcommonsenseqa | 0 | 6 | accuracy (chance 0.20) | {jcqa['accuracy']:.4f} |" in card
    assert "with a shared 20-char n-gram (corpus / sft / dpo)" in card and "perplexity" in card
    assert "- jcommonsenseqa: log-likelihood of each of the five choices" in card and "few-shot: none (zero-shot)" in card
    assert "幻覚" in card and "Hallucination" in card and "個人情報" in card


def test_release_from_deepspeed_checkpoints_bf16_sharded(trained):
    # dpo's latest checkpoint is the one its reference logits come from: parity with training holds
    out = _release(_with(trained, from_checkpoint="latest", dtype="bfloat16", max_shard_size="600KB"))
    v = json.loads((out.parent / "verification.json").read_text())
    assert "dpo DeepSpeed checkpoint" in v["source"] and "ZeRO-2" in v["source"]
    assert v["max_abs_logit_diff_vs_consolidated"] <= 1e-4
    assert v["max_abs_logit_diff"] is not None and v["max_abs_logit_diff"] <= 5e-2
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    from safetensors import safe_open

    for shard in set(index["weight_map"].values()):
        with safe_open(str(out / shard), "pt") as fh:
            assert all(fh.get_tensor(k).dtype == torch.bfloat16 for k in fh.keys())
    _, model = _load(out)  # loads, as fp32 on request
    # an earlier pretrain checkpoint: no training reference, the export is checked against the consolidated weights
    out = _release(_with(trained, from_stage="pretrain", from_checkpoint="step0000020"))
    v = json.loads((out.parent / "verification.json").read_text())
    assert "pretrain DeepSpeed checkpoint step0000020" in v["source"] and v["max_abs_logit_diff"] is None
    assert v["max_abs_logit_diff_vs_consolidated"] <= 1e-4


def test_bad_checkpoints_are_clear_errors_and_leave_nothing_complete(trained, tmp_path):
    ckpts = trained.workdir + "/pretrain/checkpoints"
    tag = open(ckpts + "/latest").read().strip()
    broken = tmp_path / "broken"
    shutil.copytree(f"{ckpts}/{tag}", broken / tag)
    (broken / "latest").write_text(tag)
    next((broken / tag).glob("*optim_states.pt")).unlink()
    cases = {"step0000099": "neither a tag", str(broken): "incomplete checkpoint: 1 optimizer shard", str(tmp_path): "no 'latest' file"}
    for spec, message in cases.items():
        recipe = _with(trained, from_stage="pretrain", from_checkpoint=spec, model_name="broken-model")
        with pytest.raises(CheckpointError, match=message):
            run_stages(recipe, ["release"], log=lambda _: None)
        ws = Workspace(recipe)
        assert not ws.is_done("release")
        assert not (ws.stage_dir("release") / "broken-model").exists()
        assert not (ws.stage_dir("release") / ".broken-model.partial").exists()


def test_missing_hf_export_says_how_to_release_from_a_checkpoint(trained, tmp_path):
    recipe = copy.deepcopy(trained)
    recipe.workdir = str(tmp_path / "copy")
    shutil.copytree(trained.workdir, recipe.workdir, ignore=shutil.ignore_patterns("release"))
    shutil.rmtree(tmp_path / "copy" / "dpo" / "hf")
    with pytest.raises(CheckpointError, match="release.from_checkpoint=latest"):
        _release(recipe)
    out = _release(_with(recipe, from_checkpoint="latest"))  # config from the recipe, tokenizer from the tokenizer stage
    assert (out / "model.safetensors").is_file()
