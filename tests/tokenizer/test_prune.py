"""Vocabulary pruning on a real SentencePiece model: requested size, least-used pieces removed, special/byte/single-
character pieces and fixed ids kept, lossless round trip, HF export with identical ids."""

from __future__ import annotations

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from kamado.tokenizer.export import export_hf, load_hf
from kamado.tokenizer.prune import PruneError, _usage, prune_model
from tests.tokenizer.conftest import config, sample_docs, train_sample
from tests.tokenizer.test_export import sample_texts
from tests.tokenizer.test_train import TRICKY


def sample_lines() -> list[str]:
    return [line for _, doc in sample_docs() for line in doc.split("\n") if line.strip()]


def proto(path) -> pb.ModelProto:
    m = pb.ModelProto()
    m.ParseFromString(path.read_bytes())
    return m


def must_keep(m: pb.ModelProto) -> list[str]:
    return [p.piece for p in m.pieces if p.type != pb.ModelProto.SentencePiece.NORMAL or len(p.piece) == 1]


@pytest.mark.parametrize("rescoring", ["renormalize", "viterbi"])
def test_pruned_model_has_the_size_keeps_what_it_must_and_is_lossless(small_model, tmp_path, rescoring):
    big = proto(small_model)
    res = prune_model(small_model, sample_lines(), 2000, tmp_path / "pruned.model", rescoring=rescoring)
    assert (res.from_size, res.to_size, res.removed) == (len(big.pieces), 2000, len(big.pieces) - 2000)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "pruned.model"))
    assert sp.get_piece_size() == 2000
    small = proto(tmp_path / "pruned.model")
    # special, byte and single-character pieces all kept, in their order; the fixed ids in front do not move
    assert must_keep(small) == must_keep(big)
    assert [p.piece for p in small.pieces[:9]] == [p.piece for p in big.pieces[:9]]
    for text in TRICKY + sample_texts():
        assert sp.decode(sp.encode(text)) == text, text[:40]
    # the Hugging Face export of the pruned model gives the same ids as SentencePiece
    hf = load_hf(export_hf(tmp_path / "pruned.model", tmp_path / "hf"))
    for text in TRICKY + sample_texts():
        assert hf(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text[:40]


def test_one_round_removes_the_least_used_pieces(small_model, tmp_path):
    big = proto(small_model)
    lines = sample_lines()
    used = _usage(big, lines)
    prune_model(small_model, lines, 2200, tmp_path / "p.model", rescoring="none", rounds=1)
    kept = {p.piece for p in proto(tmp_path / "p.model").pieces}
    multi = [(i, p.piece) for i, p in enumerate(big.pieces) if p.type == pb.ModelProto.SentencePiece.NORMAL and len(p.piece) > 1]
    removed = [used[i] for i, piece in multi if piece not in kept]
    still = [used[i] for i, piece in multi if piece in kept]
    assert len(removed) == len(big.pieces) - 2200 and max(removed) <= min(still)
    # the removed pieces were used by the sample, so encoding it takes more tokens now, but not many more
    sp_big = spm.SentencePieceProcessor(model_file=str(small_model))
    sp_small = spm.SentencePieceProcessor(model_file=str(tmp_path / "p.model"))
    before = sum(map(len, sp_big.encode(lines)))
    after = sum(map(len, sp_small.encode(lines)))
    assert before <= after < before * 1.1


def test_bad_prune_requests_are_clear_errors(small_model, tmp_path):
    with pytest.raises(PruneError, match="target must be below"):
        prune_model(small_model, sample_lines(), 3000, tmp_path / "p.model")
    with pytest.raises(PruneError, match="at least its"):
        prune_model(small_model, sample_lines(), 10, tmp_path / "p.model")
    with pytest.raises(PruneError, match="rescoring must be one of"):
        prune_model(small_model, sample_lines(), 2000, tmp_path / "p.model", rescoring="em")
    bpe = train_sample(tmp_path, config(model_type="bpe", vocab_size=2400))
    with pytest.raises(PruneError, match="only unigram models"):
        prune_model(bpe, sample_lines(), 2000, tmp_path / "p.model")
