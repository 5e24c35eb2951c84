"""The whole pipeline end to end on the committed sample (the `tiny_run` fixture), asserting real outcomes."""

import gzip
import json

import numpy as np
import pytest
import sentencepiece as spm
import torch

from kamado.stage import Workspace

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def metrics(ws: Workspace, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (ws.stage_dir(stage) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]  # training steps (the end-of-run validation row has no train loss)


def test_every_stage_is_done(tiny_run):
    ws = Workspace(tiny_run)
    for stage in tiny_run.stages:
        assert ws.is_done(stage), stage
    assert (ws.root / "recipe.resolved.yaml").is_file()


def test_corpus_invariant_and_outputs(tiny_run):
    ws = Workspace(tiny_run)
    report = json.loads((ws.stage_dir("corpus") / "report.json").read_text())
    assert report["docs_in"] == report["docs_kept"] + sum(report["dropped"].values())
    written = 0
    for shard in (ws.stage_dir("corpus") / "data").glob("*.jsonl.gz"):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            written += sum(1 for _ in fh)
    assert written == report["docs_kept"]
    # the sample's noisy web pages exercise every rule and the dedup
    for reason in ("too_short", "low_japanese_fraction", "low_hiragana_fraction", "exact_duplicate", "near_duplicate"):
        assert report["dropped"].get(reason, 0) > 0, reason
    assert report["pii_masked"].get("email", 0) > 0 and report["pii_masked"].get("phone", 0) > 0


def test_tokenizer_round_trip_and_hf_ids_identical(tiny_run):
    from transformers import AutoTokenizer

    ws = Workspace(tiny_run)
    sp = spm.SentencePieceProcessor(model_file=str(ws.stage_dir("tokenizer") / "spm.model"))
    hf = AutoTokenizer.from_pretrained(str(ws.tokenizer_dir()), local_files_only=True)
    texts = ["吾輩は猫である。名前はまだ無い。", "東京都渋谷区で2024年に開かれた会議には、約1,500人が参加しました。",
             "カタカナのコンピューターとＡＳＣＩＩ混じり、絵文字😀も。", "改行\n\nを含む 文 章"]
    for t in texts:
        ids = sp.encode(t)
        assert sp.decode(ids) == t
        assert hf(t, add_special_tokens=False)["input_ids"] == ids
        assert hf.decode(ids) == t
    ev = json.loads((ws.stage_dir("tokenizer") / "eval.json").read_text())
    assert ev["hf_id_mismatches"].startswith("0/")
    # packed shards: uint16 ids below the vocab, documents separated by EOS
    index = json.loads((ws.stage_dir("tokenizer") / "tokens" / "index.json").read_text())
    arr = np.fromfile(ws.stage_dir("tokenizer") / "tokens" / index["shards"][0]["file"], dtype=index["dtype"])
    assert index["dtype"] == "uint16" and arr.max() < index["vocab_size"]
    assert (arr == index["eos_id"]).sum() == index["shards"][0]["docs"]


def test_training_losses_fall(tiny_run):
    ws = Workspace(tiny_run)
    pre = [m["loss"] for m in metrics(ws, "pretrain")]
    assert len(pre) == 40 and np.mean(pre[-5:]) < np.mean(pre[:5]) - 1.0
    sft = [m["loss"] for m in metrics(ws, "sft")]
    assert np.mean(sft[-4:]) < np.mean(sft[:4])
    dpo = metrics(ws, "dpo")
    assert dpo[0]["loss"] == pytest.approx(np.log(2), abs=1e-3)  # policy == reference at the start
    assert np.mean([m["reward_margin"] for m in dpo[-3:]]) > 0


def test_training_writes_tensorboard_events_with_the_jsonl_losses(tiny_run):
    """TensorBoard is on for every training stage (a declared dependency, never silently skipped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ws = Workspace(tiny_run)
    events = EventAccumulator(str(ws.stage_dir("pretrain") / "tensorboard"))
    events.Reload()
    losses = {e.step: e.value for e in events.Scalars("loss")}
    jsonl = {m["step"]: m["loss"] for m in metrics(ws, "pretrain")}
    assert sorted(losses) == sorted(jsonl)
    assert all(losses[s] == pytest.approx(jsonl[s], rel=1e-6) for s in jsonl)


def test_release_loads_offline_with_logits_parity(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ws = Workspace(tiny_run)
    out = ws.stage_dir("release") / tiny_run.release.model_name
    for f in ("model.safetensors", "tokenizer.json", "tokenizer.model", "generation_config.json", "README.md", "config.json"):
        assert (out / f).is_file(), f
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval()
    ref = torch.load(ws.stage_dir("dpo") / "reference_logits.pt")
    with torch.no_grad():
        for prompt, logits in zip(ref["prompts"], ref["logits"]):
            got = model(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits
            assert (got - logits).abs().max().item() <= 1e-4


def test_model_card_holds_the_runs_numbers(tiny_run):
    ws = Workspace(tiny_run)
    card = (ws.stage_dir("release") / tiny_run.release.model_name / "README.md").read_text(encoding="utf-8")
    report = json.loads((ws.stage_dir("corpus") / "report.json").read_text())
    result = json.loads((ws.stage_dir("pretrain") / "result.json").read_text())
    assert card.startswith("---\nlanguage:\n- ja\n")
    assert f"kept {report['docs_kept']:,}" in card
    assert f"| pretrain | 40 | {result['tokens_trained']:,} |" in card
    assert "幻覚" in card and "hallucination" in card
    assert "| kamado-sample-prose | Apache-2.0 (written for kamado) |" in card  # each source with its licence


def test_rerun_skips_every_stage(tiny_run, capsys):
    from kamado.local import run_stages

    outcome = run_stages(tiny_run, list(tiny_run.stages))
    assert set(outcome.values()) == {"skipped"}
    assert capsys.readouterr().out.count("skipping") == len(tiny_run.stages)
