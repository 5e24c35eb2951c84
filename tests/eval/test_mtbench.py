"""Japanese MT-Bench-style answers in FastChat's layout, a local judge, and the contamination check over the
fine-tuning data as well as the corpus."""

from __future__ import annotations

import json

import pytest

from kamado.eval.data import EvalDataError
from kamado.eval.lm import LM
from kamado.eval.mtbench import parse_rating, read_questions, run_mt_bench
from tests.helpers import EXAMPLES, ROOT

QUESTIONS = EXAMPLES / "eval" / "mt-bench-ja-sample" / "question.jsonl"


def _lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_answers_and_local_judgments_in_fastchat_layout(random_model_dir, tmp_path):
    lm = LM(random_model_dir, batch_size=4, device="cpu")
    summary = run_mt_bench(lm, QUESTIONS, tmp_path, "tiny-random", max_new_tokens=6, judge_dir=random_model_dir,
                           log=lambda _: None, judge_max_new_tokens=8)
    answers = _lines(tmp_path / "model_answer" / "tiny-random.jsonl")
    questions = _lines(QUESTIONS)
    assert [a["question_id"] for a in answers] == [q["question_id"] for q in questions] == [1, 2, 3, 4]
    assert all(a["model_id"] == "tiny-random" and len(a["choices"][0]["turns"]) == 2 for a in answers)
    assert len({a["answer_id"] for a in answers}) == 4
    assert _lines(tmp_path / "question.jsonl") == questions
    judgments = _lines(tmp_path / "model_judgment" / f"{random_model_dir.name}_single.jsonl")
    assert [(j["question_id"], j["turn"]) for j in judgments] == [(q, t) for q in (1, 2, 3, 4) for t in (1, 2)]
    first = judgments[0]
    assert first["judge"] == [random_model_dir.name, "single-v1"] and questions[0]["turns"][0] in first["user_prompt"]
    assert answers[0]["choices"][0]["turns"][0] in first["user_prompt"]
    assert first["score"] == parse_rating(first["judgment"])
    assert summary["turns"] == 8 and summary["judged"] + summary["unparsed"] == 8
    assert json.loads((tmp_path / "mt_bench.json").read_text())["model_id"] == "tiny-random"


def test_rating_parser_and_bad_questions(tmp_path):
    assert parse_rating("丁寧な回答です。評価：[[7]]") == 7.0
    assert parse_rating("評価：[8]") == 8.0 and parse_rating("評価なし") == -1 and parse_rating("[[42]]") == -1
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["a"]}\n{"question_id": 2, "turns": []}\n', encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"q.jsonl:2: field 'turns' must be a non-empty list"):
        read_questions(bad)


def test_kamado_eval_mt_bench_command(random_model_dir, tok_recipe, tmp_path):
    from kamado.cli import main

    rc = main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
               "--mt-bench", str(QUESTIONS), "--model-id", "m", "--max-new-tokens", "3", "--out", str(tmp_path)])
    assert rc == 0 and len(_lines(tmp_path / "mt_bench" / "model_answer" / "m.jsonl")) == 4
    assert not (tmp_path / "results.json").exists()  # --mt-bench alone runs no other task


def test_contamination_covers_the_finetuning_data(tok_recipe, tmp_path):
    from kamado.eval.contamination import contamination, format_contamination, training_sources
    from kamado.eval.data import Item
    from kamado.stage import Workspace

    sft = json.loads((EXAMPLES / "sft" / "instructions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    pair = json.loads((EXAMPLES / "preference" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()[0])
    chosen = pair["chosen"] if isinstance(pair.get("chosen"), str) else json.dumps(pair, ensure_ascii=False)
    items = {"t": [Item("from-sft", {"question": sft["output"]}), Item("from-dpo", {"question": chosen}),
                   Item("clean", {"question": "この文はどの学習データにも含まれていないはずの、検査用にだけ書いた文章です。"})]}
    sources = training_sources(tok_recipe, Workspace(tok_recipe))
    assert list(sources) == ["corpus", "sft", "dpo"]  # the tiny recipe's stages with data
    report = contamination(items, sources, n=20)
    t = report["tasks"]["t"]
    assert report["sources"]["sft"]["documents"] > 0 and report["corpus_documents"] == report["sources"]["corpus"]["documents"]
    assert t["by_source"]["sft"] >= 1 and t["by_source"]["dpo"] >= 1 and t["with_any_overlap"] == 2
    assert t["example_ids"] == ["from-sft", "from-dpo"]
    assert "(corpus / sft / dpo)" in format_contamination(report)
