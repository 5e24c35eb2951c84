"""The tokenizer stage's config: SentencePiece training, export, encoding of the corpus."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kamado.config import Choice, ConfigError, operational, path_field

ModelType = Choice("ModelType", "unigram bpe")
Normalization = Choice("Normalization", "identity nfkc nmt_nfkc nfkc_cf nmt_nfkc_cf")  # SentencePiece's rule names
RequiredChars = Choice("RequiredChars", "auto none kana jis_x_0208")  # kamado/tokenizer/charset.py
ChatTemplateName = Choice("ChatTemplateName", "alpaca_ja none")  # kamado/tokenizer/chat_template.py TEMPLATES
Presplit = Choice("Presplit", "none mecab")
PruneRescoring = Choice("PruneRescoring", "renormalize viterbi none")


@dataclass
class TokenizerConfig:
    vocab_size: int = 4000
    model_type: ModelType = ModelType.unigram  # unigram | bpe
    byte_fallback: bool = True
    split_digits: bool = True
    character_coverage: float = 0.9995
    # characters that are pieces whatever the corpus holds: auto | none | kana | jis_x_0208 (kamado/tokenizer/charset.py;
    # auto: jis_x_0208 from 16k pieces, kana from 8k, else digits only)
    required_chars: RequiredChars = RequiredChars.auto
    max_piece_length: int = 8
    input_sentence_size: int = 2_000_000  # sampled lines: bounds the trainer's memory
    validation_fraction: float = 0.05  # documents held back as validation token shards
    seed: int = 17
    # Trainer details (see kamado/tokenizer/train.py and docs of each in the tokenizer README section).
    normalization: Normalization = Normalization.identity  # identity | nfkc | nmt_nfkc: normalization belongs to the corpus stage
    shuffle_input_sentence: bool = True
    max_sentence_length: int = 16384  # bytes; longer lines are skipped by the trainer
    seed_sentencepiece_size: int = 1_000_000
    split_by_unicode_script: bool = False  # pieces may span kana/kanji and punctuation ("ました。"): +7% chars/token
    split_by_whitespace: bool = True
    allow_whitespace_only_pieces: bool = True  # "▁▁▁▁" pieces: code indentation costs one token
    allow_smaller_vocab: bool = False  # true: a corpus too small for vocab_size gives a smaller vocabulary
    newline_token: bool = True  # "\n" as its own piece (else a byte-fallback <0x0A>)
    special_tokens: list[str] = field(default_factory=list)  # chat-template tokens, matched whole in text
    reserved_tokens: int = 0  # <|reserved_i|> pieces kept for later use
    chat_template: ChatTemplateName = ChatTemplateName.alpaca_ja  # alpaca_ja (the SFT template) | none
    presplit: Presplit = Presplit.none  # none | mecab: fugashi word boundaries in the training text only (llm-jp v2)
    dedup_lines: bool = True  # drop repeated lines (navigation, boilerplate) from the training text
    dedup_max_lines: int = 20_000_000  # bound on the line-hash set (~70 bytes a line)
    source_weights: dict[str, float] = field(default_factory=dict)  # corpus source name → line weight
    extend_from: Optional[str] = path_field()  # a SentencePiece .model or HF folder to extend (old ids kept)
    # Train a larger unigram vocabulary, then prune it to vocab_size by piece use on the training sample
    # (kamado/tokenizer/prune.py). On ../shared/data, 128k → 48k gave +3.2% chars/token over training 48k directly
    # (2.149 vs 2.082), 96k → 48k +2.7%, 64k → 48k +1.8%; 128k trained in 93 s against 215 s for 48k (SentencePiece stops pruning earlier). 0: off.
    prune_from_vocab_size: int = 0
    prune_rescoring: PruneRescoring = PruneRescoring.renormalize  # renormalize | viterbi | none: kept pieces' scores after pruning
    encode_workers: int = operational(2)  # processes encoding corpus shards into token shards

    def validate(self, key: str) -> None:
        if self.prune_from_vocab_size and (self.prune_from_vocab_size <= self.vocab_size or self.model_type != "unigram"
                                           or self.extend_from):
            raise ConfigError(f"{key}.prune_from_vocab_size", f"must be 0 or larger than tokenizer.vocab_size "
                              f"({self.vocab_size}), with model_type unigram and no extend_from")
