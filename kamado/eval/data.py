"""Evaluation items: JGLUE-style files read with errors that name the file, the line (or JSON path) and the field.

JCommonsenseQA and JNLI ship as JSON Lines (one object per line, despite the .json name); JSQuAD as one
SQuAD-format JSON object. Each reader returns `Item`s in file order, so `limit` always means "the first N".
"""

from __future__ import annotations

import json
from pathlib import Path

from kamado.corpus.readers import open_text
from kamado.eval.formats import READERS as MORE_READERS
from kamado.eval.formats import TEMPLATES
from kamado.eval.items import EvalDataError, Item, _json_lines, _need  # noqa: F401 (imported from here too)


# JNLI's labels as Japanese words the model scores as continuations.
JNLI_LABELS = {"entailment": "含意", "contradiction": "矛盾", "neutral": "中立"}

DEFAULT_TEMPLATES = {
    "jcommonsenseqa": "質問：{question}\n回答：",
    "jnli": "前提：{sentence1}\n仮説：{sentence2}\n関係：",
    "jsquad": "文脈：{context}\n質問：{question}\n回答：",
}


def default_template(task: str) -> str:
    return {**DEFAULT_TEMPLATES, **TEMPLATES}[task]


def read_jcommonsenseqa(path: Path) -> list[Item]:
    items = []
    for line_no, rec in _json_lines(path):
        where = f"{path}:{line_no}"
        question = _need(rec, "question", str, where)
        choices = [_need(rec, f"choice{k}", str, where) for k in range(5)]
        label = _need(rec, "label", int, where)
        if not 0 <= label < 5:
            raise EvalDataError(f"{where}: field 'label' must be 0..4, not {label}")
        qid = str(rec.get("q_id", line_no))
        items.append(Item(qid, {"question": question, **{f"choice{k}": c for k, c in enumerate(choices)}}, choices, label))
    return items


def read_jnli(path: Path) -> list[Item]:
    items = []
    choices = list(JNLI_LABELS.values())
    for line_no, rec in _json_lines(path):
        where = f"{path}:{line_no}"
        s1 = _need(rec, "sentence1", str, where)
        s2 = _need(rec, "sentence2", str, where)
        label = _need(rec, "label", str, where)
        if label not in JNLI_LABELS:
            raise EvalDataError(f"{where}: field 'label' must be one of {', '.join(JNLI_LABELS)}, not {label!r}")
        items.append(Item(str(rec.get("sentence_pair_id", line_no)), {"sentence1": s1, "sentence2": s2}, choices,
                          list(JNLI_LABELS).index(label)))
    return items


def read_jsquad(path: Path) -> list[Item]:
    try:
        with open_text(str(path)) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise EvalDataError(f"{path}: expected a SQuAD-format object with a 'data' list")
    items = []
    for a, article in enumerate(_need(data, "data", list, str(path))):
        for p, para in enumerate(_need(article, "paragraphs", list, f"{path}: data[{a}]")):
            where_p = f"{path}: data[{a}].paragraphs[{p}]"
            context = _need(para, "context", str, where_p)
            for q, qa in enumerate(_need(para, "qas", list, where_p)):
                where = f"{where_p}.qas[{q}]"
                if qa.get("is_impossible"):
                    continue  # JSQuAD v1.x has none; SQuAD 2-style unanswerables are not scored by EM/F1 here
                answers = [_need(ans, "text", str, f"{where}.answers[{k}]") for k, ans in enumerate(_need(qa, "answers", list, where))]
                if not answers:
                    raise EvalDataError(f"{where}: field 'answers' is empty")
                items.append(Item(str(_need(qa, "id", str, where)),
                                  {"context": context, "question": _need(qa, "question", str, where),
                                   "title": article.get("title", "")}, answers=answers))
    return items


def read_texts(path: Path, text_field: str = "text") -> list[tuple[str, str]]:
    """Held-back text for perplexity: JSONL records with a `text` field; returns (id, text)."""
    out = []
    for line_no, rec in _json_lines(path):
        text = _need(rec, text_field, str, f"{path}:{line_no}")
        out.append((str(rec.get("id", line_no)), text))
    return out


READERS = {"jcommonsenseqa": read_jcommonsenseqa, "jnli": read_jnli, "jsquad": read_jsquad}
FOLDER_TASKS = ("jmmlu",)  # tasks whose path may be a folder of files


def readers() -> dict:
    return {**READERS, **MORE_READERS}


def read_items(task: str, path: str | Path) -> list[Item]:
    known = readers()
    if task not in known:
        raise EvalDataError(f"unknown task {task!r} (known: perplexity, {', '.join(known)})")
    path = Path(path)
    if not (path.is_file() or (task in FOLDER_TASKS and path.is_dir())):
        raise EvalDataError(f"{task}: file not found: {path}")
    items = known[task](path)
    if not items:
        raise EvalDataError(f"{path}: no items for task {task}")
    return items


def render(template: str, item: Item, task: str) -> str:
    try:
        return template.format(**item.fields)
    except KeyError as exc:
        raise EvalDataError(f"{task}: template {template!r} uses field {exc} that the items lack "
                            f"(fields: {', '.join(item.fields)})") from None
