"""Vocabulary extension (Swallow-style): add Japanese pieces to an existing SentencePiece tokenizer, every old id
kept, so an existing model can continue pretraining with its embedding matrix grown (the pretrain stage resizes it).

The new pieces come from a SentencePiece model of the same type trained on Japanese text (`train.py`). They are
appended after the old vocabulary:
- unigram base: with the Japanese model's log-probabilities as scores (both are log-probabilities of a unigram LM);
- BPE base: in the Japanese model's merge order, scored below every old piece, so old merges keep their priority
  (SentencePiece's BPE encoder merges by score). Every appended piece is a merge of two pieces of the Japanese
  model, and all of those are present after the merge, so each new piece is reachable.
The base's normalizer and its special ids are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb

MODEL_TYPES = {pb.TrainerSpec.UNIGRAM: "unigram", pb.TrainerSpec.BPE: "bpe"}
NORMAL, USER_DEFINED = pb.ModelProto.SentencePiece.NORMAL, pb.ModelProto.SentencePiece.USER_DEFINED


class ExtensionError(ValueError):
    """A base tokenizer that cannot be extended; the message says why."""


@dataclass
class Extension:
    base_size: int
    added: int
    size: int
    model_type: str


def base_model_file(path: str | Path) -> Path:
    """The SentencePiece file of a base tokenizer: the file itself, or `tokenizer.model` inside an HF folder."""
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.model").is_file():
            return path / "tokenizer.model"
        kind = " (it holds only tokenizer.json: a byte-level BPE such as Llama 3's or GPT-2's)" if (path / "tokenizer.json").is_file() else ""
        raise ExtensionError(f"{path}: cannot be extended: no SentencePiece tokenizer.model in this folder{kind}; "
                             "kamado extends SentencePiece unigram and BPE tokenizers only")
    if not path.is_file():
        raise ExtensionError(f"{path}: base tokenizer not found")
    return path


def load_proto(path: str | Path) -> pb.ModelProto:
    path = base_model_file(path)
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception:  # protobuf's DecodeError and friends
        raise ExtensionError(f"{path}: cannot be extended: not a SentencePiece model file "
                             "(tiktoken and other formats are not supported)") from None
    if not proto.pieces:
        raise ExtensionError(f"{path}: cannot be extended: not a SentencePiece model file (no pieces)")
    if proto.trainer_spec.model_type not in MODEL_TYPES:
        raise ExtensionError(f"{path}: cannot be extended: model type {pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)} "
                             "(only unigram and BPE models can take new pieces)")
    return proto


def base_model_type(path: str | Path) -> str:
    return MODEL_TYPES[load_proto(path).trainer_spec.model_type]


def extend(base: str | Path, addition: str | Path, out: Path, max_new: int | None = None) -> Extension:
    """Write `out`: the base model with the addition's missing pieces appended (old ids unchanged)."""
    proto = load_proto(base)
    add = load_proto(addition)
    if add.trainer_spec.model_type != proto.trainer_spec.model_type:
        raise ExtensionError(f"{addition}: a {MODEL_TYPES[add.trainer_spec.model_type]} model cannot extend a "
                             f"{MODEL_TYPES[proto.trainer_spec.model_type]} base; train the addition with the base's model type")
    have = {p.piece for p in proto.pieces}
    base_size = len(proto.pieces)
    bpe = proto.trainer_spec.model_type == pb.TrainerSpec.BPE
    floor = min((p.score for p in proto.pieces if p.type == NORMAL), default=0.0)
    added = 0
    for p in add.pieces:  # in the addition's order: for BPE that is its merge order
        if p.type not in (NORMAL, USER_DEFINED) or p.piece in have:
            continue
        if max_new is not None and added >= max_new:
            break
        new = proto.pieces.add()
        new.piece, new.type = p.piece, p.type
        new.score = (floor - 1.0 - added) if bpe else p.score
        have.add(p.piece)
        added += 1
    proto.trainer_spec.vocab_size = len(proto.pieces)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return Extension(base_size=base_size, added=added, size=len(proto.pieces), model_type=MODEL_TYPES[proto.trainer_spec.model_type])
