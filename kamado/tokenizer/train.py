"""Train a SentencePiece model on the kept corpus (llm-jp v2 style by default: unigram, identity normalization,
split digits, byte fallback; normalization belongs to the corpus stage).

Two steps, so that memory stays bounded and each can be tested alone:
1. `write_training_text` streams documents into a one-line-per-paragraph text file: duplicate lines dropped,
   sources re-weighted, optionally MeCab word boundaries marked (training only, as in llm-jp v2);
2. `train_sentencepiece` runs the trainer on a sample of that file (`input_sentence_size` lines, shuffled):
   the trainer's memory grows with the sampled text, not with the corpus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from kamado.tokenizer.config import TokenizerConfig
from kamado.tokenizer.charset import required_set, resolve

# Fixed ids, the same in SentencePiece and in the Hugging Face export (train/ and finetune/ read them from the
# HF tokenizer's bos/eos/pad_token_id, so they could change; keeping them fixed keeps old runs comparable).
UNK, BOS, EOS, PAD = 0, 1, 2, 3
NEWLINE = "\n"
MIN_TRAINING_LINES = 20  # below this SentencePiece "trains" but the model is noise: refuse with a clear error


class TokenizerTrainingError(RuntimeError):
    """Training cannot give the tokenizer asked for; the message names the cause and the key to change."""


def reserved_tokens(n: int) -> list[str]:
    return [f"<|reserved_{i}|>" for i in range(n)]


def user_symbols(cfg: TokenizerConfig) -> list[str]:
    """Pieces matched whole in any text, before segmentation, identically by SentencePiece and by HF:
    the newline, chat-template tokens and reserved tokens (ids 4, 5, ... right after the fixed four)."""
    symbols = ([NEWLINE] if cfg.newline_token else []) + list(cfg.special_tokens) + reserved_tokens(cfg.reserved_tokens)
    seen: set[str] = set()
    for i, s in enumerate(symbols):
        if not s or s in seen or s in ("<unk>", "<s>", "</s>", "<pad>"):
            raise TokenizerTrainingError(f"tokenizer.special_tokens: {s!r} is empty, repeated or a fixed special token")
        seen.add(s)
    return symbols


def trainer_kwargs(cfg: TokenizerConfig) -> dict:
    """The recipe's tokenizer section as SentencePiece trainer options (one place, used by train and extend)."""
    kwargs = dict(
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        hard_vocab_limit=not cfg.allow_smaller_vocab,
        byte_fallback=cfg.byte_fallback,
        split_digits=cfg.split_digits,
        # every digit, and (by vocabulary size) kana, Japanese punctuation, full-width forms and JIS X 0208 kanji
        # are pieces even where the corpus has few or none (else 3 byte-fallback tokens each): see charset.py
        required_chars=required_set(resolve(cfg.required_chars, cfg.vocab_size)),
        character_coverage=cfg.character_coverage,
        max_sentencepiece_length=cfg.max_piece_length,
        normalization_rule_name=cfg.normalization,
        remove_extra_whitespaces=False,  # code indentation and runs of spaces survive the round trip
        add_dummy_prefix=False,  # no "▁" before every text: segments concatenate like the whole (SFT relies on it)
        split_by_whitespace=cfg.split_by_whitespace,
        allow_whitespace_only_pieces=cfg.allow_whitespace_only_pieces,  # "▁▁▁▁" pieces for code indentation
        split_by_unicode_script=cfg.split_by_unicode_script,
        input_sentence_size=cfg.input_sentence_size,
        shuffle_input_sentence=cfg.shuffle_input_sentence,
        max_sentence_length=cfg.max_sentence_length,  # default 4192 bytes silently skips long Japanese lines
        seed_sentencepiece_size=cfg.seed_sentencepiece_size,
        user_defined_symbols=user_symbols(cfg),
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        minloglevel=2,
    )
    if cfg.presplit == "mecab":
        from kamado.tokenizer.presplit import DELIMITER

        kwargs["pretokenization_delimiter"] = DELIMITER
    return kwargs


@dataclass
class TrainingText:
    """What went into the training text file, for the stage's DONE.json."""

    lines: int = 0
    chars: int = 0
    duplicate_lines: int = 0
    lines_by_source: dict[str, int] = field(default_factory=dict)


def write_training_text(docs: Iterable[tuple[str, str]], out: Path, cfg: TokenizerConfig) -> TrainingText:
    """(source, text) documents → one line per non-empty paragraph in `out`.

    Exact duplicate lines are dropped (navigation and boilerplate would otherwise buy whole pieces); the set of
    line hashes costs ~70 bytes a line, so it is bounded by `dedup_max_lines`, past which lines pass unchecked.
    `source_weights` scales each source: 0.5 keeps about half its lines, 2.0 writes each line twice."""
    rng = random.Random(cfg.seed)
    splitter = None
    if cfg.presplit == "mecab":
        from kamado.tokenizer.presplit import MecabSplitter

        splitter = MecabSplitter()
    elif cfg.presplit != "none":
        raise TokenizerTrainingError(f"tokenizer.presplit must be none or mecab, not {cfg.presplit!r}")
    seen: set[int] = set()
    stats = TrainingText()
    with open(out, "w", encoding="utf-8") as fh:
        for source, text in docs:
            weight = cfg.source_weights.get(source, 1.0)
            for line in text.split("\n"):
                if not line.strip():
                    continue
                if cfg.dedup_lines:
                    h = hash(line)
                    if h in seen:
                        stats.duplicate_lines += 1
                        continue
                    if len(seen) < cfg.dedup_max_lines:
                        seen.add(h)
                copies = int(weight) + (rng.random() < weight - int(weight))
                if not copies:
                    continue
                written = splitter.split(line) if splitter else line
                for _ in range(copies):
                    fh.write(written + "\n")
                stats.lines += copies
                stats.chars += copies * len(line)
                stats.lines_by_source[source] = stats.lines_by_source.get(source, 0) + copies
    return stats


def train_sentencepiece(cfg: TokenizerConfig, text_file: Path, model_prefix: Path, num_threads: int = 2) -> Path:
    """Train on `text_file` (one sentence a line); returns the `.model` path. Errors name the cause and the key."""
    lines = _check_text(text_file)
    if lines < MIN_TRAINING_LINES:
        raise TokenizerTrainingError(
            f"tokenizer: the training text {text_file} has {lines} non-empty line(s); at least {MIN_TRAINING_LINES} are "
            "needed (is the corpus empty, or did the corpus filters drop everything?)")
    try:
        spm.SentencePieceTrainer.train(input=str(text_file), model_prefix=str(model_prefix), num_threads=num_threads,
                                       **trainer_kwargs(cfg))
    except RuntimeError as exc:
        raise _explain(exc, cfg, text_file) from None
    return model_prefix.with_suffix(".model")


def _check_text(path: Path) -> int:
    """Non-empty lines of the training text; bytes that are not UTF-8 are an error naming the line
    (SentencePiece itself would silently drop or mangle them)."""
    n = 0
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TokenizerTrainingError(f"tokenizer: training text {path}:{line_no}: not valid UTF-8 "
                                             f"(byte {exc.start}: {raw[exc.start:exc.start + 4]!r})") from None
            n += bool(raw.strip())
    return n


def _explain(exc: RuntimeError, cfg: TokenizerConfig, text_file: Path) -> Exception:
    """SentencePiece's C++ messages, in words that name the recipe key to change."""
    msg = str(exc).split("]")[-1].strip() if "]" in str(exc) else str(exc)
    if "required_chars" in str(exc):
        return TokenizerTrainingError(
            f"tokenizer.vocab_size={cfg.vocab_size} is smaller than the characters the corpus needs at "
            f"tokenizer.character_coverage={cfg.character_coverage} plus tokenizer.required_chars="
            f"{cfg.required_chars!r} ({resolve(cfg.required_chars, cfg.vocab_size)}): {msg}")
    if "Vocabulary size too high" in str(exc) or "Vocabulary size is smaller than required" in str(exc):
        return TokenizerTrainingError(
            f"tokenizer.vocab_size={cfg.vocab_size} is larger than the training text {text_file} allows ({msg}); "
            "give more text, lower vocab_size, or set tokenizer.allow_smaller_vocab=true to take what it gives")
    return TokenizerTrainingError(f"tokenizer: SentencePiece training failed on {text_file}: {msg}")
