"""Vocabulary pruning: train a larger unigram vocabulary, then keep the pieces that the text actually uses.

SentencePiece's unigram trainer already prunes (EM, then drops the pieces whose removal costs the least
likelihood), but its last cut keeps the highest-scored pieces. Here the last cut is by use instead: the sample is
encoded (Viterbi, as at inference) and the multi-character pieces used least are removed, in rounds, because a
removed piece's text moves to other pieces and the counts change. After each round the kept pieces are re-scored:
- "renormalize": the kept pieces' probabilities are divided by their sum (a unigram LM over the smaller vocabulary);
- "viterbi": each kept piece's log-probability is set from its Viterbi count on the sample (one hard-EM step);
- "none": the scores stay as trained.

Never removed: control, unknown, user-defined (newline, chat, reserved) and byte pieces, and every single-character
piece, so every character the large model had stays a piece and the round trip stays lossless (byte fallback covers
the rest). Ids of the kept pieces keep their order; the fixed ids at the front (unk/bos/eos/pad, user pieces) do not
move. Unigram only: a BPE model merges through its intermediate pieces, which pruning would cut.

Measured on ../shared/data at 48k (benchmarks/tokenizer_compression.py, unseen text): trained at 48k 2.082
chars/token; cut from 64k / 96k / 128k by use 2.119 / 2.138 / 2.149, by score 2.119 / 2.134 / 2.144. Most of the
gain comes from training the larger vocabulary; cutting by use adds a little at 96k and up; Viterbi re-scoring
adds nothing over renormalizing (2.116 / 2.138 / 2.149) and re-scoring an unpruned 48k model changes nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

NORMAL = pb.ModelProto.SentencePiece.NORMAL
RESCORING = ("renormalize", "viterbi", "none")


class PruneError(ValueError):
    """The model cannot be pruned as asked; the message names the model file and the cause."""


@dataclass
class PruneResult:
    from_size: int
    to_size: int
    removed: int
    rounds: int
    sample_lines: int


def _protected(piece: pb.ModelProto.SentencePiece) -> bool:
    return piece.type != NORMAL or len(piece.piece) == 1


def _usage(proto: pb.ModelProto, texts: Sequence[str]) -> np.ndarray:
    """How often the Viterbi segmentation of `texts` uses each piece id."""
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    counts = np.zeros(len(proto.pieces), dtype=np.int64)
    for start in range(0, len(texts), 4096):  # bounded lists of ids, not one for the whole sample
        ids = sp.encode(list(texts[start:start + 4096]))
        if ids:
            counts += np.bincount(np.fromiter((i for x in ids for i in x), dtype=np.int64), minlength=len(counts))
    return counts


def _rescore(proto: pb.ModelProto, texts: Sequence[str], rescoring: str) -> None:
    normal = [p for p in proto.pieces if p.type == NORMAL]
    if rescoring == "renormalize":
        log_z = np.logaddexp.reduce(np.array([p.score for p in normal]))
        for p in normal:
            p.score = float(p.score - log_z)
    elif rescoring == "viterbi":
        counts = _usage(proto, texts)
        kept = [(i, p) for i, p in enumerate(proto.pieces) if p.type == NORMAL]
        # add-0.5 smoothing: a kept piece the sample never used (a rare single character) stays usable
        total = float(sum(counts[i] for i, _ in kept)) + 0.5 * len(kept)
        for i, p in kept:
            p.score = float(math.log((counts[i] + 0.5) / total))


def prune_model(model: str | Path, texts: Sequence[str], vocab_size: int, out: str | Path,
                rescoring: str = "renormalize", rounds: int = 4) -> PruneResult:
    """Write to `out` the unigram `model` cut down to `vocab_size` pieces by use on `texts` (e.g. the training
    sample, without any pre-split delimiter)."""
    model, out = Path(model), Path(out)
    if rescoring not in RESCORING:
        raise PruneError(f"{model}: rescoring must be one of {', '.join(RESCORING)}, not {rescoring!r}")
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(model.read_bytes())
    except Exception:  # protobuf's DecodeError and friends
        raise PruneError(f"{model}: not a SentencePiece model file") from None
    if proto.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        raise PruneError(f"{model}: only unigram models can be pruned (a BPE model merges through the pieces "
                         "pruning would remove); use tokenizer.model_type=unigram")
    size = len(proto.pieces)
    keep_always = sum(_protected(p) for p in proto.pieces)
    if not keep_always <= vocab_size < size:
        raise PruneError(f"{model}: cannot prune {size:,} pieces to {vocab_size:,}: the target must be below the model's "
                         f"size and at least its {keep_always:,} special, byte and single-character pieces")
    texts = [t for t in texts if t]
    if not texts:
        raise PruneError(f"{model}: no text to count piece use on")

    done = 0
    for r in range(rounds):
        excess = len(proto.pieces) - vocab_size
        if excess <= 0:
            break
        counts = _usage(proto, texts)
        # least used first; among equally used pieces, the lower-scored
        order = sorted((i for i, p in enumerate(proto.pieces) if not _protected(p)),
                       key=lambda i: (counts[i], proto.pieces[i].score))
        drop = set(order[:math.ceil(excess / (rounds - r))])
        kept = [p for i, p in enumerate(proto.pieces) if i not in drop]
        del proto.pieces[:]
        proto.pieces.extend(kept)
        _rescore(proto, texts, rescoring)
        done += 1
    proto.trainer_spec.vocab_size = len(proto.pieces)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return PruneResult(from_size=size, to_size=len(proto.pieces), removed=size - len(proto.pieces), rounds=done,
                       sample_lines=len(texts))


def rescore_model(model: str | Path, texts: Sequence[str], out: str | Path, rescoring: str = "viterbi") -> None:
    """Re-score a unigram model's pieces without removing any (the re-scoring step of `prune_model` alone)."""
    proto = pb.ModelProto()
    proto.ParseFromString(Path(model).read_bytes())
    if rescoring not in RESCORING or proto.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        raise PruneError(f"{model}: re-scoring needs a unigram model and one of {', '.join(RESCORING)}")
    _rescore(proto, [t for t in texts if t], rescoring)
    Path(out).write_bytes(proto.SerializeToString())


def sample_lines(path: str | Path, n: int, seed: int = 0) -> list[str]:
    """Up to `n` non-empty lines of a text file, a seeded uniform sample (reservoir: one pass, `n` lines held),
    with any MeCab pre-split delimiter removed: the text the pruned tokenizer will see has none."""
    from kamado.tokenizer.presplit import DELIMITER

    rng = random.Random(seed)
    kept: list[str] = []
    seen = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n").replace(DELIMITER, "")
            if not line:
                continue
            seen += 1
            if len(kept) < n:
                kept.append(line)
            else:
                j = rng.randrange(seen)
                if j < n:
                    kept[j] = line
    return kept
