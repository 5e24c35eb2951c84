"""Train a SentencePiece model on the kept corpus (llm-jp v2 style: identity normalization, split digits,
byte fallback; normalization belongs to the corpus stage)."""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from kamado.recipe import TokenizerConfig

# Fixed ids, the same in SentencePiece and in the Hugging Face export.
UNK, BOS, EOS, PAD = 0, 1, 2, 3


def train_sentencepiece(cfg: TokenizerConfig, text_file: Path, model_prefix: Path, num_threads: int = 2) -> Path:
    try:
        _train(cfg, text_file, model_prefix, num_threads)
    except RuntimeError as exc:
        if "required_chars" in str(exc):  # SentencePiece's words for "the vocabulary cannot hold every character"
            raise RuntimeError(f"tokenizer.vocab_size={cfg.vocab_size} is smaller than the characters the corpus needs at "
                               f"tokenizer.character_coverage={cfg.character_coverage}: {str(exc).split(']')[-1].strip()}") from None
        raise
    return model_prefix.with_suffix(".model")


def _train(cfg: TokenizerConfig, text_file: Path, model_prefix: Path, num_threads: int) -> None:
    spm.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(model_prefix),
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        # A small corpus cannot always fill the vocabulary; take what it gives rather than fail.
        hard_vocab_limit=False,
        byte_fallback=cfg.byte_fallback,
        split_digits=cfg.split_digits,
        character_coverage=cfg.character_coverage,
        max_sentencepiece_length=cfg.max_piece_length,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,  # no "▁" before every text: segments concatenate like the whole
        input_sentence_size=cfg.input_sentence_size,
        shuffle_input_sentence=True,
        max_sentence_length=16384,  # default 4192 bytes silently skips long Japanese lines
        seed_sentencepiece_size=200_000,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        num_threads=num_threads,
        minloglevel=2,
    )
