"""`kamado eval`: real scoring with a tiny random Llama and the run's SentencePiece tokenizer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kamado.eval.config import EvalConfig, EvalTaskConfig

from kamado.recipe import RecipeError, load_recipe
from kamado.eval.report import format_table
from kamado.eval.run import evaluate
from kamado.eval.data import EvalDataError, read_items
from kamado.eval.lm import LM
from kamado.eval.metrics import char_f1, exact_match
from tests.helpers import EXAMPLES, ROOT, SHARED_DATA, shared_data, write_jsonl

JGLUE = SHARED_DATA / "eval" / "jglue"
SAMPLE = EXAMPLES / "eval"


@pytest.fixture(scope="module")
def lm(random_model_dir):
    return LM(random_model_dir, batch_size=4, device="cpu")


def test_jcommonsenseqa_valid_accuracy_over_exactly_the_items_given(lm, random_model_dir, tmp_path):
    path = shared_data("eval", "jglue", "jcommonsenseqa-v1.3_valid.json")
    cfg = EvalConfig(tasks=[EvalTaskConfig(name="jcommonsenseqa", path=str(path), limit=12)])
    results = evaluate(cfg, random_model_dir, out_dir=tmp_path, lm=lm, log=lambda _: None)
    summary = results["tasks"][0]
    preds = [json.loads(line) for line in (tmp_path / "predictions" / "jcommonsenseqa-0shot.jsonl").read_text().splitlines()]
    first = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:12]]
    assert summary["items"] == 12 and len(preds) == 12
    assert [p["id"] for p in preds] == [str(r["q_id"]) for r in first]  # exactly the first 12 items, in order
    assert [p["label"] for p in preds] == [r["label"] for r in first]
    assert summary["correct"] == sum(p["pred"] == p["label"] for p in preds)
    assert summary["accuracy"] == pytest.approx(summary["correct"] / 12)
    assert all(p["pred"] == max(range(5), key=lambda k: p["logprobs"][k]) for p in preds)
    assert "| jcommonsenseqa | 0 | 12 |" in format_table(results)


def test_loglikelihood_matches_a_direct_forward_pass(lm):
    """The batched, padded scorer gives the same log-probability as one unpadded forward of context+choice."""
    context, choices = "質問：雨の日に差すものは？\n回答：", ["傘", "冷蔵庫の中の野菜"]
    scores = lm.loglikelihood([(context, c) for c in choices])
    for choice, score in zip(choices, scores):
        whole = lm.encode(context + choice)
        n_ctx = len(lm.encode(context))
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
        direct = sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))
        assert score.tokens == len(whole) - n_ctx
        assert score.logprob == pytest.approx(direct, abs=1e-4)


def test_fewshot_prompts_never_hold_the_item_itself(lm, random_model_dir, tmp_path):
    from kamado.eval.run import _prompt, _shots
    from kamado.eval.data import DEFAULT_TEMPLATES

    items = read_items("jcommonsenseqa", SAMPLE / "jcommonsenseqa-sample.jsonl")
    for it in items:
        shots = _shots(it, items, 3, seed=1)
        assert len(shots) == 3 and it.id not in {s.id for s in shots}
        prompt = _prompt(it, shots, DEFAULT_TEMPLATES["jcommonsenseqa"], "jcommonsenseqa")
        assert prompt.count("質問：") == 4 and prompt.endswith(f"質問：{it.fields['question']}\n回答：")
    cfg = EvalConfig(tasks=[EvalTaskConfig(name="jcommonsenseqa", path=str(SAMPLE / "jcommonsenseqa-sample.jsonl"), shots=2),
                            EvalTaskConfig(name="jnli", path=str(SAMPLE / "jnli-sample.jsonl"), limit=4),
                            EvalTaskConfig(name="jsquad", path=str(SAMPLE / "jsquad-sample.json"), max_new_tokens=4)])
    results = evaluate(cfg, random_model_dir, out_dir=tmp_path, lm=lm, log=lambda _: None)
    jcqa, jnli, jsquad = results["tasks"]
    assert (jcqa["items"], jcqa["shots"], jnli["items"], jsquad["items"]) == (8, 2, 4, 3)
    assert jnli["chance"] == pytest.approx(1 / 3)
    assert 0 <= jsquad["char_f1"] <= 1 and (tmp_path / "results.json").is_file()


def test_perplexity_on_heldback_documents(lm, tok_recipe):
    from kamado.eval.run import heldback_texts
    from kamado.stage import Workspace

    tokens = Workspace(tok_recipe).stage_dir("tokenizer") / "tokens"
    texts = heldback_texts(tokens, lm.tok)
    index = json.loads((tokens / "index.json").read_text())
    assert len(texts) == sum(s["docs"] for s in index["shards"] if s["split"] == "val")
    r = lm.perplexity(texts)
    assert r["tokens"] == sum(len(lm.encode(t)) for t in texts)  # every token after BOS, EOS included
    assert r["perplexity"] == pytest.approx(math.exp(r["nll_per_token"]), rel=1e-4)
    assert r["perplexity"] > 100  # an untrained model is close to uniform over 3000 pieces


def test_answer_metrics():
    assert exact_match("小笠原諸島", ["小笠原諸島を除く日本", "小笠原諸島"]) == 1.0
    assert exact_match(" 雨季。", ["雨季"]) == 1.0
    assert char_f1("東アジア", ["東アジアの広範囲"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert char_f1("", ["雨季"]) == 0.0


def test_bad_eval_files_name_file_line_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "jcqa.jsonl", [
        {"q_id": 1, "question": "q", "choice0": "a", "choice1": "b", "choice2": "c", "choice3": "d", "choice4": "e", "label": 0},
        {"q_id": 2, "question": "q", "choice0": "a", "choice1": "b", "choice2": "c", "choice4": "e", "label": 0}])
    with pytest.raises(EvalDataError, match=r"jcqa.jsonl:2: field 'choice3' missing"):
        read_items("jcommonsenseqa", bad)
    nli = write_jsonl(tmp_path / "jnli.jsonl", [{"sentence1": "a", "sentence2": "b", "label": "maybe"}])
    with pytest.raises(EvalDataError, match=r"jnli.jsonl:1: field 'label' must be one of"):
        read_items("jnli", nli)
    squad = tmp_path / "sq.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "answers": [{"text": "c"}]}]}]}]}))
    with pytest.raises(EvalDataError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: field 'question' missing"):
        read_items("jsquad", squad)
    with pytest.raises(EvalDataError, match="unknown task 'jcola'"):
        read_items("jcola", bad)


def test_unknown_task_in_recipe_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match=r"eval.tasks\[0\].name': unknown task 'mmlu'"):
        load_recipe(ROOT / "recipes" / "tiny-cpu.yaml", [f"workdir={tmp_path}", "eval.tasks=[{name: mmlu, path: x.json}]"])
    with pytest.raises(RecipeError, match=r"eval.tasks\[0\].path': task jnli needs a data file"):
        load_recipe(ROOT / "recipes" / "tiny-cpu.yaml", [f"workdir={tmp_path}", "eval.tasks=[{name: jnli}]"])


def test_kamado_eval_command(random_model_dir, tok_recipe, tmp_path, capsys):
    from kamado.cli import main

    rc = main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
               "--task", f"jcommonsenseqa={SAMPLE / 'jcommonsenseqa-sample.jsonl'}", "--limit", "5", "--out", str(tmp_path)])
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tasks"][0]["items"] == 5
    report = json.loads((tmp_path / "contamination.json").read_text())
    assert report["tasks"]["jcommonsenseqa"]["items"] == 5 and report["corpus_documents"] > 0
    assert "| jcommonsenseqa | 0 | 5 |" in capsys.readouterr().out
    assert main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
                 "--task", "jcola=x.json"]) == 2
