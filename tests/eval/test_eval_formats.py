"""The Japanese evaluation sets beyond JGLUE's three: read from their published formats (samples written for
kamado), scored with a tiny random Llama, code run in the sandbox."""

from __future__ import annotations

import json
import time

import pytest

from kamado.eval.config import EvalConfig, EvalTaskConfig
from kamado.eval.report import format_methods, format_table
from kamado.eval.run import evaluate
from kamado.eval.data import EvalDataError, read_items
from kamado.eval.lm import LM
from kamado.eval.metrics import extract_number, pearson, same_number, spearman
from kamado.eval.sandbox import network_isolation, run_program
from kamado.eval.tasks import _prompt, _shots
from tests.helpers import EXAMPLES, ROOT

SAMPLE = EXAMPLES / "eval"


@pytest.fixture(scope="module")
def lm(random_model_dir):
    return LM(random_model_dir, batch_size=4, device="cpu")


def test_samples_read_in_their_published_formats():
    jmmlu = read_items("jmmlu", SAMPLE / "jmmlu-sample")
    assert len(jmmlu) == 10 and {it.fields["subject"] for it in jmmlu} == {"elementary_mathematics", "japanese_geography"}
    assert jmmlu[0].choices == ["A", "B", "C", "D"] and jmmlu[0].fields["C"] == "6" and jmmlu[0].label == 2  # header skipped
    mgsm = read_items("mgsm", SAMPLE / "mgsm-ja-sample.tsv")
    assert [it.answers[0] for it in mgsm] == ["6", "20", "30", "14", "6", "240"]
    shots = read_items("mgsm", SAMPLE / "mgsm-ja-fewshot.tsv")
    assert shots[0].fields["solution"].endswith("12 - 4 = 8 枚です。 答えは8です。")
    code = read_items("jhumaneval", SAMPLE / "jhumaneval-sample.jsonl")
    assert [it.fields["entry_point"] for it in code] == ["add_tax", "count_hiragana", "reverse_words", "is_leap_year"]
    niilc = read_items("niilc", SAMPLE / "niilc-sample.xml")
    assert len(niilc) == 5 and niilc[0].answers == ["東京", "東京都"]  # the question answered only by "?" is not scored
    jsts = read_items("jsts", SAMPLE / "jsts-sample.jsonl")
    assert len(jsts) == 8 and jsts[0].target == 4.8 and jsts[0].choices == ["0", "1", "2", "3", "4", "5"]


BAD_FILES = [  # (task, file name, content, the error it must raise)
    ("jmmlu", "j/law.csv", "q,a,b,c,d,A\nq2,a,b,c,d,E\n", r"law.csv:2: field 'answer' must be one of A, B, C, D, not 'E'"),
    ("mgsm", "m.tsv", "問題\t12\n問題2\t十二\n", r"m.tsv:2: field 'answer' must be a number"),
    ("niilc", "n.xml", "<questions><question id='q1'><answers/></question></questions>", r"n.xml: question q1: element 'text' missing"),
    ("jsts", "s.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 7}\n', r"s.jsonl:1: field 'label' must be in \[0, 5\]"),
    ("jhumaneval", "h.jsonl", '{"prompt": "p", "test": "t", "entry_point": "f; import os"}\n',
     r"h.jsonl:1: field 'entry_point' must be a Python identifier"),
]


@pytest.mark.parametrize("task,name,content,error", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_name_file_line_and_field(tmp_path, task, name, content, error):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalDataError, match=error):
        read_items(task, path.parent if task == "jmmlu" else path)


def test_metrics():
    assert extract_number("12 - 4 = 8 枚です。答えは１，２００円です。") == "1200" and extract_number("なし") is None
    assert same_number("12.0", "12") and not same_number(None, "3")
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987827)
    assert spearman([1, 2, 2, 5], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr, with a tie
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_sandbox_limits_and_no_network():
    assert run_program("assert sum(range(4)) == 6").passed
    assert run_program("assert 1 == 2").status == "failed"
    start = time.time()
    assert run_program("while True: pass", timeout=1.5).status == "timeout" and time.time() - start < 5
    assert "MemoryError" in run_program("x = bytearray(2 << 30)", memory_mb=256).detail
    assert "network access is disabled" in run_program("import socket; socket.create_connection(('127.0.0.1', 80))").detail
    if network_isolation():  # below the guard: the process has no network interface to reach
        assert not run_program("import _socket; s = _socket.socket(); s.connect(('1.1.1.1', 53))").passed
    for it in read_items("jhumaneval", SAMPLE / "jhumaneval-sample.jsonl"):  # the reference solutions pass
        f = it.fields
        assert run_program(f"{f['prompt']}{it.answers[0]}\n\n{f['test']}\n\ncheck({f['entry_point']})\n").passed, it.id


def test_jmmlu_shots_come_from_the_same_subject():
    items = read_items("jmmlu", SAMPLE / "jmmlu-sample")
    for it in items:
        shots = _shots(it, items, 3, seed=1)
        assert {s.fields["subject"] for s in shots} == {it.fields["subject"]} and it.id not in {s.id for s in shots}
    prompt = _prompt(items[0], _shots(items[0], items, 2, 1), "{question}\n答え：", "jmmlu")
    assert prompt.count("答え：") == 3 and prompt.endswith(items[0].fields["question"] + "\n答え：")
    with pytest.raises(EvalDataError, match="5-shot needs 5 other items of subject"):
        _shots(items[0], items, 5, seed=1)


def test_batched_generation_equals_one_at_a_time(lm):
    prompts = ["日本の首都は", "問題：りんごが3個あります。\nステップごとの答え：", "こんにちは"]
    batched = lm.generate_batch(prompts, 8, ["\n"])
    assert batched == [lm.generate_batch([p], 8, ["\n"])[0] for p in prompts]


def test_all_new_tasks_scored_with_predictions_and_stated_method(lm, random_model_dir, tmp_path):
    cfg = EvalConfig(tasks=[
        EvalTaskConfig(name="jmmlu", path=str(SAMPLE / "jmmlu-sample"), shots=2),
        EvalTaskConfig(name="mgsm", path=str(SAMPLE / "mgsm-ja-sample.tsv"), shots=2,
                       fewshot_path=str(SAMPLE / "mgsm-ja-fewshot.tsv"), max_new_tokens=12),
        EvalTaskConfig(name="jhumaneval", path=str(SAMPLE / "jhumaneval-sample.jsonl"), max_new_tokens=12, timeout_s=5),
        EvalTaskConfig(name="niilc", path=str(SAMPLE / "niilc-sample.xml"), max_new_tokens=6),
        EvalTaskConfig(name="jsts", path=str(SAMPLE / "jsts-sample.jsonl"), shots=1)])
    results = evaluate(cfg, random_model_dir, out_dir=tmp_path, lm=lm, log=lambda _: None)
    jmmlu, mgsm, code, niilc, jsts = results["tasks"]
    pred = lambda name: [json.loads(x) for x in (tmp_path / "predictions" / name).read_text().splitlines()]  # noqa: E731
    assert jmmlu["items"] == 10 and jmmlu["chance"] == 0.25 and set(jmmlu["subjects"]) == {"elementary_mathematics", "japanese_geography"}
    assert jmmlu["correct"] == sum(r["pred"] == r["label"] for r in pred("jmmlu-2shot.jsonl"))
    rows = pred("mgsm-2shot.jsonl")
    assert len(rows) == 6 and all(r["extracted"] == extract_number(r["generation"]) for r in rows)
    assert mgsm["correct"] == sum(r["correct"] for r in rows) and "mgsm-ja-fewshot.tsv" in mgsm["fewshot_source"]
    rows = pred("jhumaneval-0shot.jsonl")
    assert len(rows) == 4 and {r["status"] for r in rows} <= {"passed", "failed", "timeout"}
    assert code["passed"] == sum(r["status"] == "passed" for r in rows) and code["sandbox"]["timeout_s"] == 5
    assert niilc["items"] == 5 and 0 <= niilc["char_f1"] <= 1
    rows = pred("jsts-1shot.jsonl")
    assert jsts["pearson"] == pytest.approx(pearson([r["pred"] for r in rows], [r["label"] for r in rows]), abs=1e-3)
    assert all(0 <= r["pred"] <= 5 for r in rows)
    table, methods = format_table(results), format_methods(results)
    for row in ("| jmmlu | 2 | 10 | accuracy", "| mgsm | 2 | 6 |", "| jhumaneval | 0 | 4 | pass@1", "| jsts | 1 | 8 | Pearson"):
        assert row in table
    assert "- jmmlu: log-likelihood of the letters A-D" in methods and "few-shot: none (zero-shot)" in methods


def test_kamado_eval_new_tasks_from_the_command_line(random_model_dir, tok_recipe, tmp_path):
    from kamado.cli import main

    rc = main(["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
               "--task", f"jmmlu={SAMPLE / 'jmmlu-sample'}", "--task", f"mgsm={SAMPLE / 'mgsm-ja-sample.tsv'}",
               "--fewshot", f"mgsm={SAMPLE / 'mgsm-ja-fewshot.tsv'}", "--shots", "1", "--limit", "3",
               "--max-new-tokens", "4", "--out", str(tmp_path)])
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(t["task"], t["items"], t["shots"]) for t in results["tasks"]] == [("jmmlu", 3, 1), ("mgsm", 3, 1)]
    assert results["tasks"][1]["fewshot_source"].startswith("1 items drawn from") and "mgsm-ja-fewshot.tsv" in results["tasks"][1]["fewshot_source"]


def test_tasks_split_by_index_and_merged_like_an_array_job(random_model_dir, tok_recipe, tmp_path):
    from kamado.cli import main

    base = ["eval", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--workdir", tok_recipe.workdir, "--model", str(random_model_dir),
            "--task", f"jsts={SAMPLE / 'jsts-sample.jsonl'}", "--task", f"jmmlu={SAMPLE / 'jmmlu-sample'}", "--limit", "4",
            "--out", str(tmp_path)]
    assert main(base + ["--merge"]) == 1  # nothing to merge yet: a clear error
    for i in (1, 0):  # array tasks finish in any order
        assert main(base + ["--task-index", str(i)]) == 0
    assert [t["task"] for t in json.loads((tmp_path / "tasks" / "1" / "results.json").read_text())["tasks"]] == ["jmmlu"]
    assert main(base + ["--merge"]) == 0
    merged = json.loads((tmp_path / "results.json").read_text())
    assert [t["task"] for t in merged["tasks"]] == ["jsts", "jmmlu"]  # the recipe's order
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["jmmlu-0shot.jsonl", "jsts-0shot.jsonl"]
    assert main(base + ["--task-index", "2"]) == 1
