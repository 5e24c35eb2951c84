"""examples/corpus_pipeline.py, run as a user runs it, on the committed sample plus a planted file: a near copy
of a sample document, a document with personal information and a line that is not JSON."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys

from tests.helpers import ROOT

SAMPLE = ROOT / "examples" / "data" / "corpus"
EMAIL_OR_PHONE = re.compile(r"[\w.+-]+@[\w-]+\.\w+|0\d{1,3}-\d{2,4}-\d{4}")


def _lines(path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line for line in fh if line.strip()]


def test_corpus_pipeline_example(tmp_path):
    inputs = tmp_path / "in"  # read in name order: the planted file (zz-) after the sample
    shutil.copytree(SAMPLE, inputs)
    original = json.loads(_lines(SAMPLE / "prose.jsonl")[3])
    copy = {"id": "planted-copy", "text": "\n\n" + original["text"].replace("。", "。\n") + "  "}  # breaks and spaces only
    contact = {"id": "planted-pii", "text": "地域の図書館では、毎月第二土曜日に子ども向けの読み聞かせ会を開いています。"
               "絵本や紙芝居を楽しみながら、親子でゆっくり過ごせる時間です。参加は無料で、事前の申し込みは必要ありません。"
               "ご質問は担当の山田太郎（taro.yamada@example.jp、電話 03-1234-5678）までお気軽にどうぞ。"}
    (inputs / "zz-planted.jsonl").write_text(json.dumps(copy, ensure_ascii=False) + "\n{not json\n"
                                          + json.dumps(contact, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "corpus_pipeline.py"), str(out), str(inputs / "*")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    read = sum(len(_lines(p)) for p in inputs.iterdir())
    kept, dropped, rejected = ([json.loads(line) for line in _lines(out / f"{name}.jsonl")]
                               for name in ("data", "dropped", "rejected"))
    assert report["read"] == read == len(kept) + len(dropped) + len(rejected)
    assert (report["kept"], sum(report["dropped"].values()), sum(report["rejected"].values())) == \
           (len(kept), len(dropped), len(rejected))
    # the planted copy is removed in favour of the sample document it repeats; the bad line is rejected by line
    by_id = {d["id"]: d for d in dropped}
    assert by_id["planted-copy"] == {"id": "planted-copy", "where": f"{inputs / 'zz-planted.jsonl'}:1",
                                     "reason": "duplicate", "duplicate_of": original["id"]}
    assert original["id"] in {d["id"] for d in kept}
    assert rejected == [{"where": f"{inputs / 'zz-planted.jsonl'}:2", "reason": "invalid_json",
                         "detail": rejected[0]["detail"]}]
    # the sample's exact copies are removed too, and the rules drop the 404 pages
    assert report["dropped"]["duplicate"] >= 7 and report["dropped"]["too_short"] >= 1
    # personal information is masked in everything kept
    pii_doc = next(d for d in kept if d["id"] == "planted-pii")
    assert "<EMAIL>" in pii_doc["text"] and "<PHONE>" in pii_doc["text"] and "taro.yamada" not in pii_doc["text"]
    assert not [d["id"] for d in kept if EMAIL_OR_PHONE.search(d["text"])]
    assert report["pii_masked"]["email"] >= 1 and report["pii_masked"]["phone"] >= 1
