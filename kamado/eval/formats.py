"""Readers for the Japanese evaluation sets beyond JGLUE's three, each in the format it is published in:

- JMMLU (nlp-waseda/JMMLU): a folder of per-subject CSV files, one row per question: question, four choices,
  answer letter (A-D); an optional header row is skipped. The subject is the file name.
- MGSM (juletxara/mgsm, `mgsm_ja.tsv`): tab-separated question and numeric answer, no header. A few-shot file
  may carry a third column, the worked solution (chain of thought) shown in the prompt.
- JHumanEval (kogi-jwu/jhumaneval, exported as JSON Lines): task_id, prompt, test, entry_point.
- NIILC (mynlp/niilc-qa): the XML question set, `<question id=..><text>..</text><answers><answer>..</answer>...`.
- JSTS (JGLUE): JSON Lines with sentence1, sentence2 and a float similarity label in [0, 5].

Errors name the file, the line (or question id) and the field, as data.py's readers do.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from kamado.eval.items import EvalDataError, Item, _json_lines, _need

LETTERS = ["A", "B", "C", "D"]

TEMPLATES = {
    "jmmlu": "以下は{subject}に関する多肢選択問題です。\n質問：{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n答え：",
    "mgsm": "問題：{question}\nステップごとの答え：",
    "jhumaneval": "{prompt}",
    "niilc": "質問：{question}\n答え：",
    "jsts": "文1：{sentence1}\n文2：{sentence2}\n二つの文の意味の近さ（0〜5）：",
}

# What each task's shots are and how an answer is read: stated in results.json and the model card.
METHODS = {
    "jcommonsenseqa": "log-likelihood of each of the five choices after the prompt; the highest wins",
    "jnli": "log-likelihood of 含意 / 矛盾 / 中立 after the prompt; the highest wins",
    "jsquad": "greedy generation up to a newline; exact match and character F1 against the listed answers",
    "jmmlu": "log-likelihood of the letters A-D after 答え：; shots are other questions of the same subject",
    "mgsm": "greedy chain-of-thought generation; the last number in the answer is compared with the gold number",
    "jhumaneval": "greedy completion of the function (stops at a new top-level statement); prompt + completion + test "
                  "run in a sandboxed subprocess (time, memory and file-size limits, no network); pass@1",
    "niilc": "greedy generation up to a newline; exact match and character F1 against any listed answer",
    "jsts": "expected score sum_k k*p(k) over the continuations 0-5 (probabilities renormalised over the six); "
            "Pearson and Spearman correlation with the gold similarity",
}


def read_jmmlu(path: Path) -> list[Item]:
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise EvalDataError(f"jmmlu: no *.csv files in {path}")
    items = []
    for f in files:
        subject = f.stem
        with open(f, encoding="utf-8-sig", newline="") as fh:
            for row_no, row in enumerate(csv.reader(fh), start=1):
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{f}:{row_no}"
                if row_no == 1 and row[-1].strip() not in LETTERS:
                    continue  # a header row
                if len(row) != 6:
                    raise EvalDataError(f"{where}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                answer = row[5].strip()
                if answer not in LETTERS:
                    raise EvalDataError(f"{where}: field 'answer' must be one of A, B, C, D, not {answer!r}")
                fields = {"subject": subject, "question": row[0], **dict(zip(LETTERS, row[1:5]))}
                items.append(Item(f"{subject}-{row_no}", fields, list(LETTERS), LETTERS.index(answer)))
    return items


def _number(text: str, where: str) -> str:
    value = text.strip().replace(",", "")
    try:
        float(value)
    except ValueError:
        raise EvalDataError(f"{where}: field 'answer' must be a number, not {text!r}") from None
    return value


def read_mgsm(path: Path) -> list[Item]:
    items = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            where = f"{path}:{line_no}"
            if len(cols) not in (2, 3):
                raise EvalDataError(f"{where}: expected question<TAB>answer (or question<TAB>solution<TAB>answer), "
                                    f"got {len(cols)} columns")
            question, answer = cols[0], _number(cols[-1], where)
            # the shot's text after ステップごとの答え：; without a worked solution, just the answer sentence
            reasoning = cols[1] if len(cols) == 3 else ""
            solution = (reasoning + " " if reasoning else "") + f"答えは{answer}です。"
            items.append(Item(str(line_no), {"question": question, "solution": solution}, answers=[answer]))
    return items


def read_jhumaneval(path: Path) -> list[Item]:
    items = []
    for line_no, rec in _json_lines(path):
        where = f"{path}:{line_no}"
        fields = {k: _need(rec, k, str, where) for k in ("prompt", "test", "entry_point")}
        if not fields["entry_point"].isidentifier():
            raise EvalDataError(f"{where}: field 'entry_point' must be a Python identifier, not {fields['entry_point']!r}")
        items.append(Item(str(rec.get("task_id", line_no)), fields, answers=[rec.get("canonical_solution", "")]))
    return items


def read_niilc(path: Path) -> list[Item]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise EvalDataError(f"{path}:{exc.position[0]}: not valid XML ({exc})") from None
    items = []
    for n, q in enumerate(root.iter("question"), start=1):
        qid = q.get("id") or str(n)
        where = f"{path}: question {qid}"
        text = q.findtext("text")
        if not text or not text.strip():
            raise EvalDataError(f"{where}: element 'text' missing or empty")
        answers = [a.text.strip() for a in q.iter("answer") if a.text and a.text.strip() not in ("", "?")]
        if not answers:
            continue  # NIILC has questions without an answer; they cannot be scored
        items.append(Item(qid, {"question": text.strip()}, answers=answers))
    return items


def read_jsts(path: Path) -> list[Item]:
    items = []
    for line_no, rec in _json_lines(path):
        where = f"{path}:{line_no}"
        label = float(_need(rec, "label", (int, float), where))
        if not (0.0 <= label <= 5.0) or math.isnan(label):
            raise EvalDataError(f"{where}: field 'label' must be in [0, 5], not {label}")
        items.append(Item(str(rec.get("sentence_pair_id", line_no)),
                          {"sentence1": _need(rec, "sentence1", str, where), "sentence2": _need(rec, "sentence2", str, where)},
                          choices=[str(k) for k in range(6)], target=label))
    return items


READERS = {"jmmlu": read_jmmlu, "mgsm": read_mgsm, "jhumaneval": read_jhumaneval, "niilc": read_niilc, "jsts": read_jsts}
