"""Named quality rules, word-boundary NG words, per-source thresholds, PII placeholders."""

import pytest

from kamado.corpus.filters import apply_filters, build_filters, ngram_fractions
from kamado.corpus.ngwords import NgWordMatcher
from kamado.corpus.normalize import normalize
from kamado.corpus.pii import luhn_valid, mask_pii, my_number_valid
from kamado.corpus.config import QualityRules
from tests.corpus.corpus_helpers import kept_docs, prose, run_corpus

LOOSE = dict(min_chars=20, min_avg_sentence_length=0)


def reason(text, **rules):
    return apply_filters(build_filters(QualityRules(**{**LOOSE, **rules})), {"id": "x", "text": text, "meta": {}})


def test_clean_prose_passes_every_default_rule_but_length():
    text = "\n".join(prose())
    assert reason(text) is None
    assert reason(text, min_chars=400) == "too_short"


@pytest.mark.parametrize("text, expected", [
    ("This page is written in English and has hardly any Japanese at all, only はい.", "low_japanese_fraction"),
    ("格安 激安 通販 送料無料 最安値 人気 口コミ 比較 評判 ランキング 特価 新品 中古", "low_hiragana_fraction"),
    ("コンピュータとネットワークのセキュリティについてのソフトウェアです。", "high_katakana_fraction"),
    ("はい。そうです。いいえ。またね。ありがとう。" * 3, "short_sentences"),
    ("\n".join(prose()) + prose()[0].replace("。", "、") * 4 + "。", "sentence_too_long"),
    ("続きはこちらから読んでください…\n" + "この記事の続きは会員登録のあとで読めるようになります…\n" * 3, "ellipsis_lines"),
    ("同じ行が何度も繰り返されるページの例です。\n" * 5 + prose()[0], "duplicate_lines"),
])
def test_each_rule_names_its_reason(text, expected):
    assert reason(normalize(text), min_avg_sentence_length=20) == expected


def test_bullet_lines_and_blocked_domain_and_compression():
    bullets = "\n".join(f"・項目その{i}についての説明がここに入ります。" for i in range(12))
    assert reason(bullets, max_bullet_line_fraction=0.5) == "bullet_lines"
    doc = {"id": "x", "text": "\n".join(prose()), "meta": {"url": "https://www.spam.example.com/a"}}
    chain = build_filters(QualityRules(**LOOSE, blocked_domains=["example.com"]))
    assert apply_filters(chain, doc) == "blocked_domain"
    doc["meta"]["url"] = "https://notexample.com/"
    assert apply_filters(chain, doc) is None
    assert reason("\n".join(prose()), min_compression_ratio=0.9) == "low_compression_ratio"


def test_ngram_repetition_swallow_measures():
    import numpy as np

    cp = lambda s: np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)
    assert ngram_fractions(cp("あいあいあいあいあいあいあい"), {2: 0.2}, {}) == "top_2gram"
    assert ngram_fractions(cp("".join(prose())), {2: 0.2, 3: 0.18, 4: 0.16}, {n: 0.15 for n in range(5, 11)}) is None
    assert ngram_fractions(cp("あいうえおかきくけこ" * 20), {2: 0.2}, {5: 0.15}) == "duplicate_5gram"


def test_ng_words_on_word_boundaries_only():
    m = NgWordMatcher()
    # substrings of NG words inside ordinary words: チェロ (cello), イエロー, エロキサチン (a drug name)
    innocent = "チェロとヴィオラの二重奏を聴いた。イエローの楽譜にエロキサチンという薬の名前が書いてあった。"
    assert m.matches(innocent) == []
    frac, hits = m.fraction("昨日見たエロ動画の話をしよう。")
    assert [h.word for h in hits] == ["エロ動画"] and hits[0].category == "adult_ja"
    assert frac == pytest.approx(4 / len("昨日見たエロ動画の話をしよう。"))
    # a fraction, not a hit: one mention in a long page keeps it, a page made of them is dropped
    long_page = "\n".join(prose()) + "\nこの映画はセックス・シンボルと呼ばれた歌手の伝記である。"
    assert reason(normalize(long_page)) is None
    assert reason("死ね、キチガイ、死ね。お前らみんなクズ人間だ、消えろ。") == "ng_words"


def test_ng_word_file_override(tmp_path):
    words = tmp_path / "mine.txt"
    words.write_text("# my list\n散歩\n", encoding="utf-8")
    text = "散歩に行った。散歩は楽しい。また散歩しよう。"
    assert reason(text, ng_word_files=[str(words)]) == "ng_words"
    assert reason(text) is None


def test_per_source_rules_override_corpus_rules(tmp_path):
    from tests.helpers import write_jsonl

    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose())]
    write_jsonl(tmp_path / "a.jsonl", docs)
    write_jsonl(tmp_path / "b.jsonl", [{"id": "b" + d["id"], "text": d["text"]} for d in docs])
    report = run_corpus(tmp_path, "    - {name: a, paths: [a.jsonl]}\n"
                                  "    - {name: b, paths: [b.jsonl], rules: {min_chars: 500}}\n")
    assert report["per_source"]["a"]["kept"] == 6 and report["per_source"]["b"]["kept"] == 0
    assert report["dropped"] == {"too_short": 6} and report["dropped_chars"]["too_short"] == sum(map(len, prose()))
    assert set(kept_docs(tmp_path / "run/corpus")) == {d["id"] for d in docs}


def test_bad_per_source_rule_key_names_the_source(tmp_path):
    from kamado.recipe import RecipeError, load_recipe

    (tmp_path / "r.yaml").write_text("name: t\nworkdir: w\ncorpus:\n  sources:\n"
                                     "    - {name: a, paths: [a.jsonl], rules: {min_charz: 5}}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"corpus.sources\[0\].rules.*min_charz"):
        load_recipe(tmp_path / "r.yaml")


def test_pii_typed_placeholders():
    assert my_number_valid("123456789018") and not my_number_valid("123456789012")
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    text = ("番号 1234 5678 9018、カード 4111-1111-1111-1111、電話 +81 3-1234-5678 と +1 415 555 2671、"
            "サーバ 192.168.0.1 と 2001:db8::1、メール a.b@example.co.jp")
    masked, counts = mask_pii(text)
    assert counts == {"my_number": 1, "credit_card": 1, "phone": 2, "ipv4": 1, "ipv6": 1, "email": 1}
    for tag in ("<MY_NUMBER>", "<CREDIT_CARD>", "<PHONE>", "<IPV4>", "<IPV6>", "<EMAIL>"):
        assert tag in masked
    # look-alikes stay: an invalid check digit, a non-Luhn 16-digit number, a time, a version, an ISBN, a date
    keep = "番号 1234 5678 9012、注文 1234567812345678、12:30:45、版 1.2.3.4567、ISBN 978-4-00-310101-8、2024-05-01"
    assert mask_pii(keep) == (keep, {})
