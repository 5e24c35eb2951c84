"""`kamado tokenizer eval`: several tokenizers side by side, every figure checked against a direct count."""

from __future__ import annotations

import gzip
import json

import pytest
import sentencepiece as spm

from kamado.cli import main
from kamado.tokenizer.evaluate import EvalInputError, compare, read_texts
from tests.helpers import SHARED_DATA, write_jsonl

TEXTS = ["吾輩は猫である。名前はまだ無い。", "東京都で2024年に会議が開かれた。", "珍しい漢字「龘」と絵文字😀。", "def f(x):\n    return x"]


def test_compare_counts_match_a_direct_count(small_model, small_hf, tmp_path):
    path = write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in TEXTS])
    report = compare([small_model, small_hf], [path])
    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    tokens = sum(len(sp.encode(t)) for t in TEXTS)
    chars = sum(map(len, TEXTS))
    byte_tokens = sum(sp.is_byte(i) for t in TEXTS for i in sp.encode(t))
    by_kind = {r["kind"]: r["all"] for r in report["results"]}
    for kind in ("sentencepiece", "hf"):
        a = by_kind[kind]
        assert a["tokens"] == tokens and a["chars_per_token"] == round(chars / tokens, 4)
        assert a["byte_fallback_rate"] == round(byte_tokens / tokens, 6) and byte_tokens >= 3 + 4  # 龘 and 😀
        assert a["round_trip"] == 1.0 and a["unk_rate"] == 0.0
        assert 1.0 < a["tokens_per_word"] < 3.0  # MeCab words of this text are about one or two pieces each
        by = a["byte_fallback_by_class"]  # every byte token is charged to the class of the character it spells
        assert sum(c["byte_tokens"] for c in by.values()) == byte_tokens
        assert by["other"]["byte_tokens"] == 4 and by["other"]["chars_fallback_rate"] == 1.0  # 😀: 4 UTF-8 bytes
        assert by["kanji"]["byte_tokens"] >= 3  # 龘
        assert by["hiragana"]["chars"] == sum(1 for t in TEXTS for ch in t if "\u3041" <= ch <= "\u309f")
    assert by_kind["hf"]["sp_hf_agreement"] == 1.0 and by_kind["sentencepiece"]["sp_hf_agreement"] is None
    assert report["texts"][str(path)]["mecab_words"] > 20


def test_cli_prints_a_table_and_writes_json(small_model, small_hf, tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"body": t} for t in TEXTS])
    b = tmp_path / "b.txt"
    b.write_text("\n".join(TEXTS[:2]) + "\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    rc = main(["tokenizer", "eval", "--tokenizer", str(small_model), str(small_hf), "--text", str(a), str(b),
               "--field", "body", "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert table.startswith("| tokenizer | vocab | chars/tok") and "spm.model" in table and "c/t b.txt" in table
    report = json.loads(out.read_text())
    assert len(report["results"]) == 2 and report["texts"][str(b)]["texts"] == 2


def test_bad_inputs_name_the_file_and_line(small_model, tmp_path, capsys):
    bad = tmp_path / "sjis.txt"
    bad.write_bytes("正しい行\n".encode() + "シフトJIS".encode("shift_jis") + b"\n")
    with pytest.raises(EvalInputError, match=r"sjis.txt:2: not valid UTF-8"):
        read_texts(bad)
    gz = tmp_path / "x.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write('{"text": "よい"}\n{"title": "本文なし"}\n')
    with pytest.raises(EvalInputError, match=r"x.jsonl.gz:2: field 'text' missing"):
        read_texts(gz)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "よい"}])
    assert main(["tokenizer", "eval", "--tokenizer", str(junk), "--text", str(good)]) == 2
    assert "junk.model: not a SentencePiece model" in capsys.readouterr().err


def test_reference_llm_jp_tokenizer_side_by_side(small_model, tmp_path):
    ref = SHARED_DATA.parent / "tokenizers" / "llmjp_code10K_en20K_ja30K.ver2.2.model"
    if not ref.is_file():
        pytest.skip(f"reference tokenizer not found at {ref}")
    path = write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in TEXTS])
    rows = {r["vocab_size"]: r["all"] for r in compare([small_model, ref], [path], with_words=False)["results"]}
    assert rows[48_586]["round_trip"] == 1.0 and rows[48_586]["chars_per_token"] > 1.0


def test_segmentation_ties_are_told_apart_from_mismatches(small_model):
    """The same pieces in another order score the same (a tie both libraries may break differently); another
    segmentation of the same text with another score is a real disagreement."""
    from kamado.tokenizer.evaluate import segmentation_tie

    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    one, four = sp.piece_to_id("▁"), sp.piece_to_id("▁▁▁▁")
    assert sp.unk_id() not in (one, four)
    assert segmentation_tie(sp, [one, four], [four, one])
    assert not segmentation_tie(sp, [one] * 5, [four, one])
    assert not segmentation_tie(sp, [one, four], [four])  # another text altogether
