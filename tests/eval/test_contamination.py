"""Contamination report: long character n-grams shared between evaluation items and the training corpus."""

from __future__ import annotations

from kamado.eval.contamination import contamination
from kamado.eval.data import Item


def _item(i, question, answer="傘"):
    return Item(str(i), {"question": question, "choice0": answer}, [answer], 0)


def test_overlap_is_found_only_for_items_copied_into_the_corpus():
    leaked = "雨の日に外を歩くときに手に持って差す道具は何でしょうか"
    clean = "冬の寒い朝に首に巻いて体を温める衣類は何でしょうか"
    corpus = ["今日のクイズ：" + leaked.replace("外", " 外") + "。答えは傘です。",  # whitespace and NFKC do not hide it
              "まったく関係のない文章がここにあります。" * 3]
    report = contamination({"jcommonsenseqa": [_item(1, leaked), _item(2, clean), _item(3, "短い")]}, corpus, n=20)
    r = report["tasks"]["jcommonsenseqa"]
    assert (r["items"], r["with_any_overlap"], r["with_half_overlap"], r["shorter_than_n"]) == (3, 1, 1, 1)
    assert r["example_ids"] == ["1"] and report["corpus_documents"] == 2


def test_a_short_shared_phrase_is_not_contamination():
    item = _item(1, "雨の日に外を歩くときに手に持って差す道具は何でしょうか")
    report = contamination({"t": [item]}, ["雨の日に外を歩くときに"], n=20)  # 11 characters in common, n = 20
    assert report["tasks"]["t"]["with_any_overlap"] == 0
