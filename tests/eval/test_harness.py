"""`kamado eval --harness lm-eval`: lm-evaluation-harness offline on local files, and the same per-item choices as
kamado's own scorer when both use the same prompt."""

from __future__ import annotations

import json

import pytest

from kamado.eval.config import EvalConfig, EvalTaskConfig
from kamado.eval.run import evaluate
from kamado.eval.harness import jcommonsenseqa_task_yaml
from kamado.eval.lm import LM
from tests.helpers import EXAMPLES, ROOT, SHARED_DATA

pytest.importorskip("lm_eval", reason="the optional lm_eval package (kamado[eval]) is not installed")
pytestmark = pytest.mark.slow  # lm-eval's import and task set-up take ~10-20 s per test on 2 cores

JCQA = SHARED_DATA / "eval" / "jglue" / "jcommonsenseqa-v1.3_valid.json"
SAMPLE = EXAMPLES / "eval" / "jcommonsenseqa-sample.jsonl"
SAME_PROMPT = jcommonsenseqa_task_yaml("kamado_jcommonsenseqa_same_prompt")  # kamado's own prompt, as an lm-eval task


def test_lm_eval_makes_the_same_choices_as_kamados_scorer(random_model_dir, tmp_path):
    from kamado.eval.harness import run_lm_eval

    data, limit = (JCQA, 40) if JCQA.is_file() else (SAMPLE, None)
    yaml = tmp_path / "same_prompt.yaml"
    yaml.write_text(SAME_PROMPT, encoding="utf-8")
    theirs = run_lm_eval(random_model_dir, [(str(yaml), str(data), None)], tmp_path, batch_size=8, device="cpu",
                         shots=0, limit=limit, log=lambda _: None)
    lm = LM(random_model_dir, batch_size=8, device="cpu")
    cfg = EvalConfig(tasks=[EvalTaskConfig(name="jcommonsenseqa", path=str(data), limit=limit, template="質問：{question}\n回答：")])
    ours = evaluate(cfg, random_model_dir, out_dir=tmp_path / "kamado", lm=lm, log=lambda _: None)
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    lm_eval_items = sorted(read(tmp_path / "lm-eval" / "predictions" / "kamado_jcommonsenseqa_same_prompt.jsonl"), key=lambda r: r["doc_id"])
    kamado_items = read(tmp_path / "kamado" / "predictions" / "jcommonsenseqa-0shot.jsonl")
    assert len(lm_eval_items) == len(kamado_items) == ours["tasks"][0]["items"]
    assert [r["pred"] for r in lm_eval_items] == [r["pred"] for r in kamado_items]
    for a, b in zip(lm_eval_items, kamado_items):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=2e-3)
    acc = theirs["results"]["kamado_jcommonsenseqa_same_prompt"]["acc,none"]
    assert acc == pytest.approx(ours["tasks"][0]["accuracy"])


def test_leaderboard_task_runs_offline_from_a_local_file(random_model_dir, tok_recipe, tmp_path):
    from kamado.cli import main

    rc = main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
               "--harness", "lm-eval", "--task", f"ja_leaderboard_jcommonsenseqa={SAMPLE}", "--shots", "1", "--limit", "3",
               "--out", str(tmp_path)])
    assert rc == 0
    results = json.loads((tmp_path / "lm-eval" / "results.json").read_text())
    assert "acc,none" in results["results"]["ja_leaderboard_jcommonsenseqa"] and results["n-shot"]["ja_leaderboard_jcommonsenseqa"] == 1
    rows = [json.loads(x) for x in (tmp_path / "lm-eval" / "predictions" / "ja_leaderboard_jcommonsenseqa.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["logprobs"]) == 5 for r in rows)
    assert main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
                 "--harness", "lm-eval", "--task", "ja_leaderboard_jcommonsenseqa=/nonexistent.jsonl"]) == 1
