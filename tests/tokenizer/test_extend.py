"""Vocabulary extension: Japanese pieces appended to a base tokenizer, every old id kept."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from kamado.tokenizer.export import export_hf, id_mismatches
from kamado.tokenizer.extend import ExtensionError, extend
from tests.tokenizer.conftest import config, sample_docs, train_sample
from tests.tokenizer.test_export import sample_texts


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_extension_keeps_old_ids_and_compresses_japanese(tmp_path, model_type):
    docs = sample_docs()
    (tmp_path / "base").mkdir()
    (tmp_path / "ja").mkdir()
    # a small base that saw a tenth of the text, extended with a model trained on all of it
    base = train_sample(tmp_path / "base", config(model_type=model_type, vocab_size=1200, allow_smaller_vocab=True), docs[::10])
    addition = train_sample(tmp_path / "ja", config(model_type=model_type, vocab_size=2400))
    out = tmp_path / "extended.model"
    ext = extend(base, addition, out)
    old = spm.SentencePieceProcessor(model_file=str(base))
    new = spm.SentencePieceProcessor(model_file=str(out))
    assert ext.base_size == old.get_piece_size() and ext.added > 500 and new.get_piece_size() == ext.size
    assert all(new.id_to_piece(i) == old.id_to_piece(i) for i in range(old.get_piece_size()))
    assert (new.bos_id(), new.eos_id(), new.pad_id()) == (old.bos_id(), old.eos_id(), old.pad_id())
    texts = sample_texts()
    assert sum(len(new.encode(t)) for t in texts) < 0.85 * sum(len(old.encode(t)) for t in texts)
    assert all(new.decode(new.encode(t)) == t for t in texts)
    # new ids are really used, and the HF export of the extended model agrees with SentencePiece
    assert max(max(new.encode(t), default=0) for t in texts) >= old.get_piece_size()
    hf = export_hf(out, tmp_path / "hf")
    assert id_mismatches(out, hf, texts)[1] == 0


def test_bases_that_cannot_be_extended(tmp_path, small_model):
    folder = tmp_path / "bytelevel"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(ExtensionError, match="no SentencePiece tokenizer.model.*byte-level BPE"):
        extend(folder, small_model, tmp_path / "x.model")
    junk = tmp_path / "qwen.tiktoken"
    junk.write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(ExtensionError, match="not a SentencePiece model file"):
        extend(junk, small_model, tmp_path / "x.model")
    with pytest.raises(ExtensionError, match="base tokenizer not found"):
        extend(tmp_path / "missing.model", small_model, tmp_path / "x.model")
    bpe = train_sample(tmp_path, config(model_type="bpe", vocab_size=2400))
    with pytest.raises(ExtensionError, match="a unigram model cannot extend a bpe base"):
        extend(bpe, small_model, tmp_path / "x.model")
