"""SentencePiece training on the committed sample: fixed ids, special pieces, lossless text, bad input."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from kamado.tokenizer.presplit import DELIMITER, MecabSplitter, count_words
from kamado.tokenizer.train import BOS, EOS, PAD, UNK, TokenizerTrainingError, train_sentencepiece, write_training_text
from tests.tokenizer.conftest import config, sample_docs, train_sample

TRICKY = ["吾輩は猫である。名前はまだ無い。", "2024年に約1,500人が参加した。", "絵文字😀と龘（珍しい漢字）", "    return a + b\n\tx",
          "改行\n\n二つ", " 先頭の空白  と連続空白", "ＡＢＣ全角とabc半角"]


def test_fixed_ids_special_pieces_and_lossless_text(small_model):
    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (UNK, BOS, EOS, PAD)
    # newline, chat tokens and reserved tokens come right after the fixed four, and match whole in text
    assert [sp.id_to_piece(i) for i in range(4, 9)] == ["\n", "<|im_start|>", "<|im_end|>", "<|reserved_0|>", "<|reserved_1|>"]
    assert sp.encode("<|im_start|>こんにちは\n") == [5] + sp.encode("こんにちは") + [4]
    for text in TRICKY:
        ids = sp.encode(text)
        assert sp.decode(ids) == text, text  # identity normalization + byte fallback: nothing lost
    # byte fallback: an unseen character becomes its UTF-8 bytes, not <unk>
    ids = sp.encode("龘")
    assert UNK not in ids and all(sp.is_byte(i) for i in ids) and len(ids) == 3
    # split digits: every digit is its own piece
    assert [sp.id_to_piece(i) for i in sp.encode("2024")] == ["2", "0", "2", "4"]


def test_pieces_respect_max_length_and_code_whitespace(small_model):
    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    normal = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_unknown(i) is False and not sp.is_control(i) and not sp.is_byte(i)]
    assert max(len(p) for p in normal if not p.startswith("<|")) <= 8
    # indentation runs are whole pieces (allow_whitespace_only_pieces), so code indentation is cheap
    assert "▁▁▁▁" in normal
    assert sp.id_to_piece(sp.encode("    return")[0]) == "▁▁▁▁"


def test_no_dummy_prefix_segments_concatenate_like_the_whole(small_model):
    """SFT encodes prompt and response separately: no "▁" may be added in front of a segment, and at a newline
    (a piece of its own) the two encodings concatenate to exactly the encoding of the whole."""
    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    assert sp.id_to_piece(sp.encode("応答")[0]) != "▁" and not sp.id_to_piece(sp.encode("応答")[0]).startswith("▁")
    prompt = "以下は、タスクを説明する指示です。\n\n### 指示:\n日本の首都は？\n\n### 応答:\n"
    response = "東京です。"
    assert sp.encode(prompt) + sp.encode(response) == sp.encode(prompt + response)
    assert sp.decode(sp.encode(prompt) + sp.encode(response)) == prompt + response


def test_bpe_trains_and_is_lossless(tmp_path):
    sp = spm.SentencePieceProcessor(model_file=str(train_sample(tmp_path, config(model_type="bpe", vocab_size=2400))))
    assert sp.get_piece_size() == 2400
    for text in TRICKY:
        assert sp.decode(sp.encode(text)) == text


def test_write_training_text_dedups_and_weights(tmp_path):
    docs = [("a", "同じ行\n同じ行\n別の行"), ("b", "Bの行\n\nBの二行目")]
    out = tmp_path / "t.txt"
    stats = write_training_text(docs, out, config(dedup_lines=True, source_weights={"b": 2.0}))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["同じ行", "別の行", "Bの行", "Bの行", "Bの二行目", "Bの二行目"]
    assert stats.duplicate_lines == 1 and stats.lines_by_source == {"a": 2, "b": 4}
    write_training_text(docs, out, config(source_weights={"a": 0.0}))
    assert "同じ行" not in out.read_text(encoding="utf-8")


def test_mecab_presplit_keeps_pieces_inside_words(tmp_path):
    """llm-jp v2's pre-split: MeCab word boundaries in the training text only. Pieces then rarely span words."""
    line = "吾輩は猫である。名前はまだ無い。"
    marked = MecabSplitter().split(line)
    assert marked.replace(DELIMITER, "") == line and marked.count(DELIMITER) >= 8
    (tmp_path / "plain").mkdir()
    (tmp_path / "split").mkdir()
    plain = spm.SentencePieceProcessor(model_file=str(train_sample(tmp_path / "plain", config())))
    split = spm.SentencePieceProcessor(model_file=str(train_sample(tmp_path / "split", config(presplit="mecab", allow_smaller_vocab=True))))

    def multiword(sp):
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i))]
        return sum(count_words(p.replace("▁", " ")) > 1 for p in pieces if len(p) > 1 and not p.startswith("<|"))

    assert multiword(split) < multiword(plain) / 2
    assert split.decode(split.encode(line)) == line


def test_bad_training_input_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerTrainingError, match="non-empty line"):
        train_sample(tmp_path, config(), docs=[])
    with pytest.raises(TokenizerTrainingError, match="vocab_size=60000 is larger than the training text"):
        train_sample(tmp_path, config(vocab_size=60_000))
    with pytest.raises(TokenizerTrainingError, match="vocab_size=300 is smaller than the characters"):
        train_sample(tmp_path, config(vocab_size=300))
    bad = tmp_path / "bad.txt"
    bad.write_bytes("正しい行\n".encode() * 30 + b"\x82\xa0 shift-jis\n")
    with pytest.raises(TokenizerTrainingError, match=r"bad.txt:31: not valid UTF-8"):
        train_sentencepiece(config(), bad, tmp_path / "m")
    # a larger vocabulary than the data allows is taken when asked for
    sp = spm.SentencePieceProcessor(model_file=str(train_sample(tmp_path, config(vocab_size=60_000, allow_smaller_vocab=True))))
    assert sp.get_piece_size() < 60_000


def test_required_chars_are_pieces_even_when_the_corpus_lacks_them(tmp_path):
    """Issue 17: the documented set (kana, Japanese and full-width punctuation/symbols, full-width digits, the
    ideographic space) is in the vocabulary whatever the sample holds: no byte fallback on `回答：` or （０）！"""
    from kamado.tokenizer.charset import jis_row, required_set, resolve

    kana = required_set("kana")
    assert "\u3000" in kana and all(c in kana for c in "、。（）！？：０９Ａｚぁゔァヶー・「」")
    full = required_set("jis_x_0208")
    assert len(full) - len(kana) == 6355  # JIS X 0208 level 1 + 2 kanji, from the euc_jp codec
    assert jis_row(16).startswith("亜") and jis_row(84).startswith("堯")
    assert resolve("auto", 48_000) == "jis_x_0208" and resolve("auto", 8_000) == "kana" and resolve("auto", 2_500) == "none"
    model = train_sample(tmp_path, config(vocab_size=3000, required_chars="kana"))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    missing = [c for c in kana if sp.piece_to_id(c) == sp.unk_id()]
    assert not missing, missing[:20]
    for text in ("：はい", "（０）！？　「ゔ」", "ＡＢＣ１２３"):  # required characters only: not one byte piece
        ids = sp.encode(text)
        assert not any(sp.is_byte(i) for i in ids) and sp.decode(ids) == text, text
    with pytest.raises(TokenizerTrainingError, match="required_chars"):
        train_sample(tmp_path, config(vocab_size=1000, required_chars="jis_x_0208"))
