"""The corpus stage's config: sources, normalization, quality rules, PII masking, dedup, shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kamado.config import REQUIRED, Choice, ConfigError, at_least, omegaconf_message, operational, path_field, paths_of

SourceFormat = Choice("SourceFormat", "auto jsonl parquet hf text warc")  # kamado/corpus/readers/ FORMATS
HtmlMode = Choice("HtmlMode", "auto always never")


@dataclass
class QualityRules:
    """Named Japanese quality rules; each names itself in the report when it drops a document.

    Defaults are the Swallow corpus v1 thresholds (Okazaki et al. 2024) where Swallow has the rule; the
    n-gram fractions are Gopher's (Rae et al. 2021) on characters, as Swallow applies them to Japanese.
    A `max_*` fraction of 1.0 (or a `min_*` of 0) turns that rule off.
    """

    min_chars: int = 400  # Swallow
    max_chars: int = 200_000  # ours: a memory and extraction-failure guard
    min_japanese_fraction: float = 0.5  # Swallow: hiragana+katakana+kanji+、。 over non-space characters
    min_hiragana_fraction: float = 0.2  # Swallow: hiragana over Japanese characters (particles, inflections)
    max_katakana_fraction: float = 0.5  # Swallow: katakana over Japanese characters
    min_avg_sentence_length: float = 20.0  # Swallow (sentences end in 。．！？!? or a line end)
    max_avg_sentence_length: float = 90.0  # Swallow
    max_sentence_length: int = 200  # Swallow
    max_duplicate_line_fraction: float = 0.30  # Gopher/Swallow: repeated lines over lines
    max_duplicate_paragraph_fraction: float = 0.30  # Gopher/Swallow: repeated paragraphs over paragraphs
    max_duplicate_line_char_fraction: float = 0.20  # Gopher/Swallow: characters in repeated lines
    max_duplicate_paragraph_char_fraction: float = 0.20
    max_top_2gram_char_fraction: float = 0.20  # Swallow: occurrences of the most frequent char n-gram over all
    max_top_3gram_char_fraction: float = 0.18
    max_top_4gram_char_fraction: float = 0.16
    max_duplicate_5gram_char_fraction: float = 0.15  # Swallow: distinct char n-grams seen twice or more over distinct
    max_duplicate_6gram_char_fraction: float = 0.14
    max_duplicate_7gram_char_fraction: float = 0.13
    max_duplicate_8gram_char_fraction: float = 0.12
    max_duplicate_9gram_char_fraction: float = 0.11
    max_duplicate_10gram_char_fraction: float = 0.10
    max_ellipsis_line_fraction: float = 0.2  # Swallow: sentences ending in … or ・
    max_bullet_line_fraction: float = 0.9  # Gopher: lines starting with a bullet
    max_ng_word_fraction: float = 0.03  # ours: NG-word characters (on word boundaries) over non-space characters
    ng_word_files: list[str] = path_field(factory=list)  # empty: kamado's shipped lists (adult, hate)
    blocked_domains: list[str] = field(default_factory=list)  # a host or any parent domain of it
    blocked_domains_file: Optional[str] = path_field()  # one domain per line
    min_compression_ratio: float = 0.0  # zlib bytes / UTF-8 bytes; repetitive boilerplate compresses far below 0.3
    quality_model: Optional[str] = path_field()  # a model saved by `python -m kamado.corpus.quality_model train`
    min_quality_score: float = 0.5  # the model's probability that a document reads like the reference text


@dataclass
class CorpusSource:
    name: str = REQUIRED
    paths: list[str] = path_field(factory=list)  # files, globs or folders, relative to the recipe file
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"  # checked against the domain block list (WARC: the target URI)
    format: SourceFormat = SourceFormat.auto  # auto (by extension) | jsonl (.gz/.zst) | parquet | hf (save_to_disk folder) | text | warc
    html: HtmlMode = HtmlMode.auto  # auto (extract when the text is an HTML page) | always | never
    # Per-source overrides of corpus.rules, e.g. {min_chars: 100} for short leads; keys are QualityRules fields.
    rules: dict[str, Any] = paths_of(QualityRules)
    license: Optional[str] = None  # the source's licence, carried into report.json and the model card
    follow_symlinks: bool = False  # read files under a source folder/glob that link outside it (refused by default)


@dataclass
class DedupConfig:
    """Near-duplicate removal and decontamination (exact dedup is `corpus.exact_dedup`); see kamado/corpus/dedup.

    Every check runs on the fingerprint text (ruby markup and whitespace removed), never on raw markup."""

    near: bool = False  # MinHash-LSH on character n-grams (off: the corpus stage keeps its exact-only behaviour)
    ngram: int = 5  # characters per shingle (llm-jp corpus v4); words would break Japanese (text-dedup #90)
    num_perm: int = 200
    bands: int = 20  # bands x rows <= num_perm; 20 x 10 puts the 50% collision point near Jaccard 0.74
    rows: int = 10
    seed: int = 42
    verify_threshold: float = 0.8  # keep a candidate pair only if its estimated Jaccard reaches this; 0: keep all
    containment: bool = True  # also remove a document found (almost) wholly inside a larger one (needs near)
    containment_threshold: float = 0.9  # fraction of the small document's sampled shingles found in the large one
    containment_scale: int = 32  # sample 1 shingle in `scale` (FracMinHash)
    containment_min_samples: int = 16  # fewer samples (about scale x this characters): not checked
    max_posting: int = 64  # a sampled shingle shared by more documents is boilerplate: skipped for containment
    bucket_unit_docs: int = 4_000_000  # documents per buckets-phase unit: bounds its memory (~16 B x 3 per doc)
    decontam_paths: list[str] = path_field(factory=list)  # evaluation sets (JSON/JSONL, .gz) to decontaminate against
    decontam_ngram: int = 50  # characters of fingerprint text a document must share with an evaluation text

    def validate(self, key: str) -> None:
        at_least(key, self, ("ngram", "num_perm", "bands", "rows", "containment_scale", "bucket_unit_docs", "decontam_ngram"))
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(f"{key}.bands", f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm ({self.num_perm})")
        at_least(key, self, ("max_posting",), low=2)


@dataclass
class CorpusConfig:
    sources: list[CorpusSource] = field(default_factory=list)
    nfkc: bool = False  # keep text as written (issue 17): the tokenizer covers full-width forms (required_chars)
    ja_punctuation: bool = False  # unify ，． into 、。 (after NFKC: "," "." between Japanese characters)
    neologdn: bool = False  # neologdn normalization (long-vowel marks, tilde/hyphen variants, spacing)
    rules: QualityRules = field(default_factory=QualityRules)
    max_record_bytes: int = 10_000_000  # larger records are rejected (rejected:too_large), not read
    dropped_samples: int = operational(3)  # documents kept per drop reason (per shard) for inspection
    mask_pii: bool = True
    exact_dedup: bool = True  # drop documents whose fingerprint text equals an earlier one's
    dedup: DedupConfig = field(default_factory=DedupConfig)
    num_shards: int = 2
    workers: int = operational(2)

    def validate(self, key: str) -> None:
        at_least(key, self, ("num_shards",))
        for i in range(len(self.sources)):
            source_rules(self, i, key)

    def check_inputs(self, key: str, workdir: str, stages: list[str]) -> None:  # noqa: ARG002
        """Every source matches files and holds at least one record."""
        from kamado.corpus.readers import has_a_record, source_files

        if not self.sources:
            raise ConfigError(f"{key}.sources", "no sources given")
        for i, source in enumerate(self.sources):
            files = source_files(source.paths, source.format, source.follow_symlinks)
            if not files:
                raise ConfigError(f"{key}.sources[{i}].paths", f"source {source.name}: no file matches {source.paths}")
            if not any(has_a_record(f, source.format) for f in files):
                raise ConfigError(f"{key}.sources[{i}].paths",
                                  f"source {source.name}: empty corpus: {', '.join(files)} hold no record")


def source_rules(corpus: CorpusConfig, index: int, key: str = "corpus") -> QualityRules:
    """corpus.rules with corpus.sources[index].rules laid over it (typed: an unknown key or a bad type is a
    ConfigError naming it). OmegaConf is imported only for a source with rules of its own."""
    overrides = corpus.sources[index].rules
    if not overrides:
        return corpus.rules
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(corpus.rules), OmegaConf.create(dict(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{key}.sources[{index}].rules", omegaconf_message(exc)) from exc
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
