"""The typed recipe: one dataclass per stage, loaded from YAML with OmegaConf.

OmegaConf's structured configs give us a typed merge of YAML and `--set key=value` dotlists for free:
unknown keys and wrong types are errors that name the key. We add the file name to those errors, resolve
relative paths against the recipe file's folder, and check inputs exist before any stage starts.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

STAGES = ("corpus", "tokenizer", "pretrain", "sft", "reward", "dpo", "ppo", "release")
TRAINING_STAGES = ("pretrain", "sft", "reward", "dpo", "ppo")
# Stages whose `hf/` is a policy (a causal LM) a later stage continues from or release publishes; the reward
# model is a scalar-head model that PPO reads as its judge, never as its starting point.
POLICY_STAGES = ("pretrain", "sft", "dpo", "ppo")
# A recipe without `stages` runs these (reward and ppo are optional: listed explicitly when wanted).
DEFAULT_STAGES = ("corpus", "tokenizer", "pretrain", "sft", "dpo", "release")


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file and the key."""


# ---------------------------------------------------------------- result keys and operational keys
# A stage's fingerprint covers the keys that change its result. Keys marked `operational` (logging, checkpoint
# and eval cadence, how many checkpoints are kept, worker processes, samples kept for inspection) never
# invalidate a finished stage nor move its folder aside. `extendable` keys (a training stage's max_steps) are
# kept out of the fingerprint too: raising one resumes the stage from its newest checkpoint (kamado/stage.py).
def operational(default: Any) -> Any:
    return field(default=default, metadata={"operational": True})


def extendable(default: Any) -> Any:
    return field(default=default, metadata={"extendable": True})


# `layout` keys (how many nodes and ranks, and the gradient accumulation that makes up the difference) say how a
# training step is spread over the machines a cluster gave this time, not what a step computes: the fingerprint
# holds their product with micro_batch_size, the samples per optimizer step, instead of each. A resume on another
# allocation with the same samples per step continues (kamado/train/elastic.py reshards the checkpoint).
def layout(default: Any) -> Any:
    return field(default=default, metadata={"layout": True})


def marked_keys(cls: type, mark: str) -> set[str]:
    """Names of `cls`'s fields marked `mark` here or in any dataclass it derives from (a subclass that only
    changes a default, like SFTConfig.max_steps, keeps its base's mark)."""
    import dataclasses

    return {f.name for base in cls.__mro__ if dataclasses.is_dataclass(base)
            for f in dataclasses.fields(base) if f.metadata.get(mark)}


# ---------------------------------------------------------------- corpus
@dataclass
class CorpusSource:
    name: str = MISSING
    paths: list[str] = field(default_factory=list)  # files, globs or folders, relative to the recipe file
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"  # checked against the domain block list (WARC: the target URI)
    format: str = "auto"  # auto (by extension) | jsonl (.gz/.zst) | parquet | hf (save_to_disk folder) | text | warc
    html: str = "auto"  # auto (extract when the text is an HTML page) | always | never
    # Per-source overrides of corpus.rules, e.g. {min_chars: 100} for short leads; keys are QualityRules fields.
    rules: dict[str, Any] = field(default_factory=dict)
    license: Optional[str] = None  # the source's licence, carried into report.json and the model card
    follow_symlinks: bool = False  # read files under a source folder/glob that link outside it (refused by default)


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
    ng_word_files: list[str] = field(default_factory=list)  # empty: kamado's shipped lists (adult, hate)
    blocked_domains: list[str] = field(default_factory=list)  # a host or any parent domain of it
    blocked_domains_file: Optional[str] = None  # one domain per line
    min_compression_ratio: float = 0.0  # zlib bytes / UTF-8 bytes; repetitive boilerplate compresses far below 0.3
    quality_model: Optional[str] = None  # a model saved by `python -m kamado.corpus.quality_model train`
    min_quality_score: float = 0.5  # the model's probability that a document reads like the reference text


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
    decontam_paths: list[str] = field(default_factory=list)  # evaluation sets (JSON/JSONL, .gz) to decontaminate against
    decontam_ngram: int = 50  # characters of fingerprint text a document must share with an evaluation text


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


# ---------------------------------------------------------------- tokenizer
@dataclass
class TokenizerConfig:
    vocab_size: int = 4000
    model_type: str = "unigram"  # unigram | bpe
    byte_fallback: bool = True
    split_digits: bool = True
    character_coverage: float = 0.9995
    # characters that are pieces whatever the corpus holds: auto | none | kana | jis_x_0208 (kamado/tokenizer/charset.py;
    # auto: jis_x_0208 from 16k pieces, kana from 8k, else digits only)
    required_chars: str = "auto"
    max_piece_length: int = 8
    input_sentence_size: int = 2_000_000  # sampled lines: bounds the trainer's memory
    validation_fraction: float = 0.05  # documents held back as validation token shards
    seed: int = 17
    # Trainer details (see kamado/tokenizer/train.py and docs of each in the tokenizer README section).
    normalization: str = "identity"  # identity | nfkc | nmt_nfkc: normalization belongs to the corpus stage
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
    chat_template: str = "alpaca_ja"  # alpaca_ja (the SFT template) | none
    presplit: str = "none"  # none | mecab: fugashi word boundaries in the training text only (llm-jp v2)
    dedup_lines: bool = True  # drop repeated lines (navigation, boilerplate) from the training text
    dedup_max_lines: int = 20_000_000  # bound on the line-hash set (~70 bytes a line)
    source_weights: dict[str, float] = field(default_factory=dict)  # corpus source name → line weight
    extend_from: Optional[str] = None  # a SentencePiece .model or HF folder to extend (old ids kept)
    # Train a larger unigram vocabulary, then prune it to vocab_size by piece use on the training sample
    # (kamado/tokenizer/prune.py). On ../shared/data, 128k → 48k gave +3.2% chars/token over training 48k directly
    # (2.149 vs 2.082), 96k → 48k +2.7%, 64k → 48k +1.8%; 128k trained in 93 s against 215 s for 48k (SentencePiece stops pruning earlier). 0: off.
    prune_from_vocab_size: int = 0
    prune_rescoring: str = "renormalize"  # renormalize | viterbi | none: kept pieces' scores after pruning
    encode_workers: int = operational(2)  # processes encoding corpus shards into token shards


# ---------------------------------------------------------------- training
@dataclass
class ModelConfig:
    preset: str = "tiny"  # see kamado.train.model.PRESETS
    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    num_kv_heads: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    # Continued pretraining: start from a local HF checkpoint instead of a preset (shape keys then ignored);
    # its embeddings are resized to the tokenizer, new rows initialised from the mean of the old ones.
    init_from: Optional[str] = None


@dataclass
class TokenSource:
    """One source of a pretraining mixture: a folder of packed token shards (tokens/index.json)."""

    path: str = MISSING
    weight: float = 1.0


@dataclass
class TrainConfig:
    """What every training stage (pretrain, sft, dpo) shares: the DeepSpeed loop's knobs."""

    nproc_per_node: int = layout(2)
    nodes: int = layout(1)
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seq_len: int = 128
    micro_batch_size: int = 4
    grad_accum: int = layout(1)
    max_steps: int = extendable(100)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = operational(50)  # >= 1; a value >= max_steps saves only at the end
    keep_checkpoints: int = operational(2)  # >= 1: the newest complete checkpoint is what a resume needs
    log_every: int = operational(10)
    seed: int = 1234
    schedule: str = "cosine"  # cosine: warmup then cosine | wsd: warmup, stable, then linear decay
    decay_fraction: float = 0.1  # wsd: the last fraction of steps that decays to min_lr_ratio
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    activation_checkpointing: bool = False
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states in CPU memory (stage >= 1)
    offload_params: bool = False  # ZeRO-Infinity style parameter offload to CPU (stage 3 only)
    eval_every: int = operational(0)  # validation loss every K steps (0: only at the end)
    eval_batches: int = operational(8)
    max_nonfinite_in_a_row: int = 5  # non-finite losses skip the update; this many in a row stop the run
    spike_sigma: float = operational(4.0)  # a loss this many standard deviations above the recent mean is logged as a spike
    # Raw DeepSpeed keys merged into the generated config (e.g. {"zero_optimization": {"overlap_comm": true}});
    # a key the recipe already sets to another value is an error, so the recipe stays the one source of truth.
    deepspeed_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainConfig(TrainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    # Weighted mixture of token-shard folders; empty: the tokenizer stage's own shards.
    data: list[TokenSource] = field(default_factory=list)
    # Positions restart at each document (EOS-separated) and attention stays within it (kamado/train/attention.py).
    document_attention: bool = False
    liger_kernels: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy); CUDA only
    compile: bool = False  # torch.compile the model (kamado/train/kernels.py)


@dataclass
class LoRAConfig:
    """LoRA adapters (peft) instead of full fine-tuning; merged into plain weights in `<stage>/hf`."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class SFTConfig(TrainConfig):
    # JSONL files: instruction/input/output records, or `messages` lists (system?, user, assistant, ...)
    data: list[str] = field(default_factory=list)
    lr: float = 1e-3
    max_steps: int = extendable(40)
    warmup_steps: int = 4
    seq_len: int = 256
    validation_fraction: float = 0.1
    packing: bool = False  # several examples per row of seq_len tokens (attention stays within each example)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class RewardConfig(TrainConfig):
    """Reward model: the policy LM with a scalar head, pairwise Bradley–Terry loss on prompt/chosen/rejected."""

    data: list[str] = field(default_factory=list)  # JSONL files: prompt/chosen/rejected records
    validation_fraction: float = 0.2  # pairs held back for the accuracy in reward/accuracy.json
    lr: float = 1e-3
    max_steps: int = extendable(40)
    warmup_steps: int = 4
    seq_len: int = 256
    micro_batch_size: int = 4


@dataclass
class DPOConfig(TrainConfig):
    data: list[str] = field(default_factory=list)  # JSONL files: prompt/chosen/rejected records
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid (DPO) | ipo (Azar et al. 2023, on per-token mean log-probs)
    label_smoothing: float = 0.0  # sigmoid only: conservative DPO, the assumed rate of flipped preference labels
    # precomputed: reference log-probs from one pass before training (no second model in memory);
    # live: a frozen copy of the starting model runs beside the policy each step (a ZeRO-3 inference engine under ZeRO-3)
    reference: str = "precomputed"
    lr: float = 5e-4
    max_steps: int = extendable(20)
    warmup_steps: int = 2
    seq_len: int = 256
    micro_batch_size: int = 2
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class PPOConfig(TrainConfig):
    """RLHF on rollouts: PPO (policy, value model, frozen reference, reward) or GRPO (group-relative, no value model).

    micro_batch_size is prompts per rank per step; GRPO samples `group_size` responses for each."""

    data: list[str] = field(default_factory=list)  # JSONL files: `prompt` (or `instruction`) per record
    algorithm: str = "ppo"  # ppo | grpo
    reward: str = "rule"  # rule (reward_suffix) | model (the reward stage's model; needs it in `stages`)
    reward_suffix: str = "です。"  # rule: a response that ends in this scores 1, else 0
    stop_text: str = "。"  # a response ends at the first token holding this (or at EOS); "" = EOS only
    max_new_tokens: int = 24
    temperature: float = 1.0
    group_size: int = 4  # grpo
    ppo_epochs: int = 2  # optimisation passes over each batch of rollouts
    minibatches: int = 1  # each pass splits the rollout batch into this many optimizer steps (DeepSpeed-Chat, OpenRLHF)
    value_from: str = "auto"  # value model's start: policy | reward (the reward stage's model) | auto: reward if staged
    clip_range: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05  # ppo: per-token KL penalty in the reward; grpo: KL term in the loss
    adaptive_kl: bool = False  # Ziegler et al. 2019 controller towards target_kl
    target_kl: float = 6.0
    kl_horizon: int = 10000
    whiten_rewards: bool = True  # scores normalised over the rollout batch (all ranks) before GAE
    value_lr: Optional[float] = None  # None: lr
    lr: float = 2e-4
    max_steps: int = extendable(30)
    warmup_steps: int = 0
    seq_len: int = 256
    micro_batch_size: int = 8


# ---------------------------------------------------------------- release
@dataclass
class ReleaseConfig:
    model_name: str = "kamado-tiny-ja"
    license: str = "apache-2.0"
    dtype: str = "float32"  # float32 | bfloat16
    prompts: list[str] = field(default_factory=lambda: ["日本の首都は", "春になると", "以下は、タスクを説明する指示です。"])
    max_new_tokens: int = 24
    logits_tolerance: float = 1e-4
    # Which training stage to release (None: the last one before release), and where its weights come from:
    # None = its consolidated `hf/` folder; "latest" or a tag (e.g. step0000100) or a path = its DeepSpeed
    # checkpoint, consolidated here (any ZeRO stage).
    from_stage: Optional[str] = None
    from_checkpoint: Optional[str] = None
    max_shard_size: str = "5GB"  # safetensors shards above this size are split (save_pretrained)
    base_model: Optional[str] = None  # Hub id for the card's base_model (default: pretrain.model.init_from's name)
    chat_template: bool = True  # the SFT prompt template as the tokenizer's chat template (when sft/dpo ran)


@dataclass
class EvalTaskConfig:
    """One evaluation task. Names: EVAL_TASKS (see kamado/eval/: formats.py for the file formats)."""

    name: str = MISSING
    path: Optional[str] = None  # JSON/JSONL file; perplexity: None = the tokenizer stage's held-back documents
    shots: int = 0
    fewshot_path: Optional[str] = None  # where shot examples come from (None: the same file, never the item itself)
    limit: Optional[int] = None  # score the first `limit` items only
    template: Optional[str] = None  # str.format template of one item's prompt (None: the task's default)
    max_new_tokens: int = 32  # generation tasks (jsquad, niilc, mgsm, jhumaneval)
    timeout_s: float = 10.0  # jhumaneval: wall-clock limit per program in the sandbox
    memory_mb: int = 1024  # jhumaneval: address-space limit per program


@dataclass
class EvalConfig:
    """Evaluation run by the release stage (table in the model card) and by `kamado eval`."""

    enabled: bool = True
    tasks: list[EvalTaskConfig] = field(default_factory=lambda: [EvalTaskConfig(name="perplexity")])
    batch_size: int = 8
    max_length: Optional[int] = None  # tokens per forward pass (None: the model's max_position_embeddings)
    contamination_ngram: int = 20  # characters (NFKC, whitespace removed) shared with the training corpus
    seed: int = 1234


# ---------------------------------------------------------------- slurm
@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time_minutes: int = 60
    cpus_per_task: int = 1
    mem_gb: Optional[int] = None
    gpus_per_node: int = 0
    array_parallelism: int = 64  # array tasks of a data stage running at once (the "%N" of --array)
    max_array_tasks: Optional[int] = None  # shards are grouped into at most this many tasks (None: MaxArraySize)
    # corpus dedup phases as job arrays (None: when corpus.dedup.near or decontamination is on; else the finish job
    # runs them, exact dedup being one hash per document) and the array size of the buckets and verify phases,
    # whose work units are known only once the phase before ran (None: corpus.num_shards)
    dedup_arrays: Optional[bool] = None
    dedup_tasks: Optional[int] = None
    max_requeues: int = 3  # a job stops requeueing itself once SLURM_RESTART_COUNT reaches this
    signal_delay_s: int = 120  # training ranks get SIGUSR1 this long before the time limit: checkpoint, requeue
    extra_sbatch: list[str] = field(default_factory=list)  # raw "#SBATCH" lines without the prefix
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, venv)


@dataclass
class Recipe:
    name: str = MISSING
    workdir: str = MISSING  # relative to the recipe file
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def stage_config(self, stage: str) -> Any:
        if stage == "release":  # the release stage also evaluates: a changed eval section redoes it
            return ReleaseStageConfig(release=self.release, eval=self.eval)
        return getattr(self, stage)


@dataclass
class ReleaseStageConfig:
    """What the release stage's fingerprint covers: its own section and the eval section it runs."""

    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------- loading
def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Load, type-check and validate a recipe; relative paths become absolute (against the recipe's folder)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    schema = OmegaConf.structured(Recipe)
    try:
        from_file = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: report with the file
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    try:
        merged = OmegaConf.merge(schema, from_file)
    except OmegaConfBaseException as exc:
        raise RecipeError(f"{path}: {_describe(exc)}") from exc
    if overrides:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise RecipeError(f"--set {' '.join(overrides)}: {_describe(exc)}") from exc
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise RecipeError(f"{path}: required key(s) missing: {', '.join(missing)}")
    recipe: Recipe = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _resolve_paths(recipe, path.parent.resolve())
    _check_values(recipe, str(path))
    return recipe


def recipe_from_dict(data: dict, base_dir: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Same as load_recipe but from a dict (the resolved recipe a worker reads back)."""
    merged = OmegaConf.merge(OmegaConf.structured(Recipe), OmegaConf.create(data))
    if overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    recipe: Recipe = OmegaConf.to_object(merged)  # type: ignore[assignment]
    _resolve_paths(recipe, Path(base_dir).resolve())
    return recipe


def to_dict(obj: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]


def to_yaml(recipe: Recipe) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(recipe))


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    return f"key '{key}': {msg}" if key else msg


def _abs(base: Path, p: str) -> str:
    return str(p if os.path.isabs(p) else (base / p).resolve())


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    recipe.workdir = _abs(base, recipe.workdir)
    for source in recipe.corpus.sources:
        source.paths = [_abs(base, p) for p in source.paths]
        _resolve_rule_paths(source.rules, base)
    recipe.corpus.dedup.decontam_paths = [_abs(base, p) for p in recipe.corpus.dedup.decontam_paths]
    rules = recipe.corpus.rules
    rules.ng_word_files = [_abs(base, p) for p in rules.ng_word_files]
    rules.blocked_domains_file = _abs(base, rules.blocked_domains_file) if rules.blocked_domains_file else None
    rules.quality_model = _abs(base, rules.quality_model) if rules.quality_model else None
    recipe.sft.data = [_abs(base, p) for p in recipe.sft.data]
    for source in recipe.pretrain.data:
        source.path = _abs(base, source.path)
    if recipe.pretrain.model.init_from:
        recipe.pretrain.model.init_from = _abs(base, recipe.pretrain.model.init_from)
    recipe.dpo.data = [_abs(base, p) for p in recipe.dpo.data]
    recipe.reward.data = [_abs(base, p) for p in recipe.reward.data]
    recipe.ppo.data = [_abs(base, p) for p in recipe.ppo.data]
    if recipe.tokenizer.extend_from:
        recipe.tokenizer.extend_from = _abs(base, recipe.tokenizer.extend_from)
    for task in recipe.eval.tasks:
        task.path = _abs(base, task.path) if task.path else None
        task.fewshot_path = _abs(base, task.fewshot_path) if task.fewshot_path else None


def _resolve_rule_paths(rules: dict, base: Path) -> None:
    """Paths inside a source's rule overrides are relative to the recipe file too."""
    if isinstance(rules.get("ng_word_files"), list):
        rules["ng_word_files"] = [_abs(base, p) for p in rules["ng_word_files"]]
    for key in ("blocked_domains_file", "quality_model"):
        if isinstance(rules.get(key), str):
            rules[key] = _abs(base, rules[key])


def source_rules(corpus: CorpusConfig, index: int) -> QualityRules:
    """corpus.rules with corpus.sources[index].rules laid over it (typed: unknown keys and bad types fail)."""
    overrides = corpus.sources[index].rules
    if not overrides:
        return corpus.rules
    merged = OmegaConf.merge(OmegaConf.structured(corpus.rules), OmegaConf.create(dict(overrides)))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _check_values(recipe: Recipe, where: str) -> None:
    from kamado.slurm.validate import check_slurm_values  # light (no submitit): values that reach sbatch scripts
    check_slurm_values(recipe, where)
    for i, stage in enumerate(recipe.stages):
        if stage not in STAGES:
            raise RecipeError(f"{where}: key 'stages[{i}]': unknown stage '{stage}' (known: {', '.join(STAGES)})")
    order = [STAGES.index(s) for s in recipe.stages]
    if order != sorted(order) or len(set(order)) != len(order):
        raise RecipeError(f"{where}: key 'stages': stages must be listed once each, in the order {', '.join(STAGES)}")
    if recipe.tokenizer.model_type not in ("unigram", "bpe"):
        raise RecipeError(f"{where}: key 'tokenizer.model_type': must be unigram or bpe, not {recipe.tokenizer.model_type!r}")
    tok = recipe.tokenizer
    if tok.prune_from_vocab_size and (tok.prune_from_vocab_size <= tok.vocab_size or tok.model_type != "unigram"
                                      or tok.extend_from):
        raise RecipeError(f"{where}: key 'tokenizer.prune_from_vocab_size': must be 0 or larger than tokenizer.vocab_size "
                          f"({tok.vocab_size}), with model_type unigram and no extend_from")
    if tok.prune_rescoring not in ("renormalize", "viterbi", "none"):
        raise RecipeError(f"{where}: key 'tokenizer.prune_rescoring': must be renormalize, viterbi or none, "
                          f"not {tok.prune_rescoring!r}")
    for stage in TRAINING_STAGES:
        cfg: TrainConfig = getattr(recipe, stage)
        if cfg.zero_stage not in (0, 1, 2, 3):
            raise RecipeError(f"{where}: key '{stage}.zero_stage': must be 0..3, not {cfg.zero_stage}")
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise RecipeError(f"{where}: key '{stage}.precision': must be fp32, bf16 or fp16, not {cfg.precision!r}")
        if cfg.schedule not in ("cosine", "wsd"):
            raise RecipeError(f"{where}: key '{stage}.schedule': must be cosine or wsd, not {cfg.schedule!r}")
        if cfg.offload_params and cfg.zero_stage != 3:
            raise RecipeError(f"{where}: key '{stage}.offload_params': parameter offload needs zero_stage 3, not {cfg.zero_stage}")
        if cfg.offload_optimizer and cfg.zero_stage == 0:
            raise RecipeError(f"{where}: key '{stage}.offload_optimizer': optimizer offload needs zero_stage 1, 2 or 3")
        for key in ("max_steps", "micro_batch_size", "seq_len", "nproc_per_node", "nodes", "grad_accum", "log_every",
                    "eval_batches"):
            if getattr(cfg, key) < 1:
                raise RecipeError(f"{where}: key '{stage}.{key}': must be at least 1")
        if cfg.checkpoint_every < 1:
            raise RecipeError(f"{where}: key '{stage}.checkpoint_every': must be at least 1, not {cfg.checkpoint_every} "
                              f"(to save only at the end, set it to max_steps or more)")
        if cfg.keep_checkpoints < 1:  # 0 would keep nothing to resume from (it used to keep everything)
            raise RecipeError(f"{where}: key '{stage}.keep_checkpoints': must be at least 1, not {cfg.keep_checkpoints} "
                              f"(the newest complete checkpoint is what a resume or a raised max_steps continues from)")
        for key in ("eval_every", "warmup_steps"):
            if getattr(cfg, key) < 0:
                raise RecipeError(f"{where}: key '{stage}.{key}': must be 0 or more, not {getattr(cfg, key)}")
    if recipe.corpus.num_shards < 1:
        raise RecipeError(f"{where}: key 'corpus.num_shards': must be at least 1")
    dd = recipe.corpus.dedup
    for key in ("ngram", "num_perm", "bands", "rows", "containment_scale", "bucket_unit_docs", "decontam_ngram"):
        if getattr(dd, key) < 1:
            raise RecipeError(f"{where}: key 'corpus.dedup.{key}': must be at least 1")
    if dd.bands * dd.rows > dd.num_perm:
        raise RecipeError(f"{where}: key 'corpus.dedup.bands': bands x rows ({dd.bands} x {dd.rows}) exceeds num_perm ({dd.num_perm})")
    if dd.max_posting < 2:
        raise RecipeError(f"{where}: key 'corpus.dedup.max_posting': must be at least 2")
    for i, source in enumerate(recipe.corpus.sources):
        if source.format not in ("auto", "jsonl", "parquet", "hf", "text", "warc"):
            raise RecipeError(f"{where}: key 'corpus.sources[{i}].format': unknown format {source.format!r}")
        if source.html not in ("auto", "always", "never"):
            raise RecipeError(f"{where}: key 'corpus.sources[{i}].html': must be auto, always or never")
        try:
            source_rules(recipe.corpus, i)
        except OmegaConfBaseException as exc:
            raise RecipeError(f"{where}: key 'corpus.sources[{i}].rules': {_describe(exc)}") from exc
    _check_release_eval(recipe, where)
    _check_finetune(recipe, where)
    check_workdir(recipe, where)


def _check_finetune(recipe: Recipe, where: str) -> None:
    if recipe.dpo.loss_type not in ("sigmoid", "ipo"):
        raise RecipeError(f"{where}: key 'dpo.loss_type': must be sigmoid or ipo, not {recipe.dpo.loss_type!r}")
    if recipe.dpo.reference not in ("precomputed", "live"):
        raise RecipeError(f"{where}: key 'dpo.reference': must be precomputed or live, not {recipe.dpo.reference!r}")
    if not 0.0 <= recipe.dpo.label_smoothing < 0.5:
        raise RecipeError(f"{where}: key 'dpo.label_smoothing': must be in [0, 0.5), not {recipe.dpo.label_smoothing}")
    ppo = recipe.ppo
    if ppo.algorithm not in ("ppo", "grpo"):
        raise RecipeError(f"{where}: key 'ppo.algorithm': must be ppo or grpo, not {ppo.algorithm!r}")
    if ppo.reward not in ("rule", "model"):
        raise RecipeError(f"{where}: key 'ppo.reward': must be rule or model, not {ppo.reward!r}")
    if ppo.reward == "model" and "ppo" in recipe.stages and "reward" not in recipe.stages:
        raise RecipeError(f"{where}: key 'ppo.reward': 'model' needs the reward stage in 'stages'")
    if ppo.value_from not in ("auto", "policy", "reward"):
        raise RecipeError(f"{where}: key 'ppo.value_from': must be auto, policy or reward, not {ppo.value_from!r}")
    if ppo.value_from == "reward" and "ppo" in recipe.stages and "reward" not in recipe.stages:
        raise RecipeError(f"{where}: key 'ppo.value_from': 'reward' needs the reward stage in 'stages'")
    if ppo.minibatches < 1 or ppo.ppo_epochs < 1:
        raise RecipeError(f"{where}: key 'ppo.minibatches'/'ppo.ppo_epochs': must be at least 1")
    if ppo.algorithm == "grpo" and ppo.group_size < 2:
        raise RecipeError(f"{where}: key 'ppo.group_size': GRPO needs at least 2 samples per prompt")


def check_workdir(recipe: Recipe, where: str = "recipe") -> None:
    """Refuse a workdir that overlaps an input before any work: stage folders are moved aside when their config
    changes, so an input inside `<workdir>/<stage>/` would vanish from where the recipe says it is, and a workdir
    inside a source folder would make kamado's own outputs read as corpus input."""
    import glob

    from kamado.inputs import stage_input_paths

    work = os.path.realpath(recipe.workdir)
    own_tokens = os.path.join(work, "tokenizer", "tokens")
    for stage in STAGES:
        for key, pattern in stage_input_paths(recipe, stage):
            static = _static_prefix(pattern)
            paths = [static] + (glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [])
            for path in map(os.path.realpath, paths):
                if key.startswith("pretrain.data") and path.startswith(own_tokens + os.sep):
                    continue  # this run's own token shards, mixed in by name: the tokenizer stage writes them
                for name in STAGES:
                    folder = os.path.join(work, name)
                    if path == folder or path.startswith(folder + os.sep):
                        raise RecipeError(
                            f"{where}: key '{key}': the input {pattern} lies inside the stage folder {folder}/ "
                            f"(workdir {recipe.workdir}); kamado moves that folder aside when the stage is redone. "
                            f"Move the input or choose another workdir")
            root = os.path.realpath(static)
            walks = os.path.isdir(root) if not glob.has_magic(pattern) else (
                "**" in pattern or len(Path(pattern).parts) > len(Path(work).parts))
            if stage == "corpus" and walks and (work == root or work.startswith(root + os.sep)):
                raise RecipeError(
                    f"{where}: key '{key}': the workdir {recipe.workdir} lies inside the source folder {root}; "
                    f"kamado's stage outputs would be read as corpus input. Choose a workdir outside it")


def _static_prefix(pattern: str) -> str:
    """The part of a path before its first glob component (the pattern itself when it has none)."""
    import glob

    if not glob.has_magic(pattern):
        return pattern
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return str(Path(*parts[:i])) if i else "."
    return pattern


def plain_name_problem(name: str) -> str | None:
    """Why `name` is not a plain folder name (None when it is one)."""
    if not name or not name.strip():
        return "must be a non-empty name"
    if "/" in name or "\\" in name or os.path.isabs(name):
        return "must be a plain folder name (no '/' or '\\')"
    if name.startswith("."):
        return "must not start with '.' (no '..', no hidden folder)"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "must not hold control characters (newline, NUL)"
    return None


EVAL_TASKS = ("perplexity", "jcommonsenseqa", "jnli", "jsquad", "jmmlu", "mgsm", "jhumaneval", "niilc", "jsts")


def _check_release_eval(recipe: Recipe, where: str) -> None:
    rel = recipe.release
    bad_name = plain_name_problem(rel.model_name)
    if bad_name:  # the release stage writes (and replaces) <workdir>/release/<model_name>: nothing else
        raise RecipeError(f"{where}: key 'release.model_name': {bad_name}, not {rel.model_name!r}")
    if rel.dtype not in ("float32", "bfloat16"):
        raise RecipeError(f"{where}: key 'release.dtype': must be float32 or bfloat16, not {rel.dtype!r}")
    if rel.from_stage is not None and rel.from_stage not in POLICY_STAGES:  # a reward model is not a release
        raise RecipeError(f"{where}: key 'release.from_stage': must be one of {', '.join(POLICY_STAGES)}, not {rel.from_stage!r}")
    for i, task in enumerate(recipe.eval.tasks):
        if task.name not in EVAL_TASKS:
            raise RecipeError(f"{where}: key 'eval.tasks[{i}].name': unknown task {task.name!r} (known: {', '.join(EVAL_TASKS)})")
        if task.name != "perplexity" and not task.path:
            raise RecipeError(f"{where}: key 'eval.tasks[{i}].path': task {task.name} needs a data file")
        if task.shots < 0 or (task.limit is not None and task.limit < 1):
            raise RecipeError(f"{where}: key 'eval.tasks[{i}]': shots must be >= 0 and limit >= 1")


def check_inputs(recipe: Recipe, stages: list[str], where: str = "recipe") -> None:
    """Before any work starts: every input the selected stages read exists and is not empty."""
    if "corpus" in stages:
        if not recipe.corpus.sources:
            raise RecipeError(f"{where}: key 'corpus.sources': no sources given")
        from kamado.corpus.readers import has_a_record, source_files

        for i, source in enumerate(recipe.corpus.sources):
            files = source_files(source.paths, source.format, source.follow_symlinks)
            if not files:
                raise RecipeError(
                    f"{where}: key 'corpus.sources[{i}].paths' ({source.name}): no file matches {source.paths}")
            if not any(has_a_record(f, source.format) for f in files):
                raise RecipeError(
                    f"{where}: key 'corpus.sources[{i}].paths' ({source.name}): empty corpus: {', '.join(files)} hold no record")
    if "pretrain" in stages:
        own_tokens = os.path.join(recipe.workdir, "tokenizer", "tokens")  # this run's tokenizer stage writes them
        for j, source in enumerate(recipe.pretrain.data):
            made_here = "tokenizer" in stages and os.path.normpath(source.path) == os.path.normpath(own_tokens)
            if not made_here and not os.path.isfile(os.path.join(source.path, "index.json")):
                raise RecipeError(f"{where}: key 'pretrain.data[{j}].path': no token shards (index.json) in {source.path}")
            if source.weight <= 0:
                raise RecipeError(f"{where}: key 'pretrain.data[{j}].weight': must be positive")
        init = recipe.pretrain.model.init_from
        if init and not os.path.isfile(os.path.join(init, "config.json")):
            raise RecipeError(f"{where}: key 'pretrain.model.init_from': no HF checkpoint (config.json) in {init}")
    for stage in ("sft", "reward", "dpo", "ppo"):
        if stage in stages:
            cfg = getattr(recipe, stage)
            if not cfg.data:
                raise RecipeError(f"{where}: key '{stage}.data': no data files given")
            for j, f in enumerate(cfg.data):
                if not os.path.isfile(f):
                    raise RecipeError(f"{where}: key '{stage}.data[{j}]': file not found: {f}")
                if not _has_a_record(f):
                    raise RecipeError(f"{where}: key '{stage}.data[{j}]': empty file: {f}")
    if "release" in stages and recipe.eval.enabled:
        check_eval_inputs(recipe.eval, where)


def check_eval_inputs(cfg: EvalConfig, where: str = "recipe") -> None:
    for i, task in enumerate(cfg.tasks):
        for key in ("path", "fewshot_path"):
            f = getattr(task, key)
            if f and not (os.path.isfile(f) or (task.name == "jmmlu" and os.path.isdir(f))):  # JMMLU: a folder of CSVs
                raise RecipeError(f"{where}: key 'eval.tasks[{i}].{key}' ({task.name}): file not found: {f}")


def _has_a_record(path: str) -> bool:
    from kamado.corpus.readers import open_text

    with open_text(path) as fh:
        return any(line.strip() for line in fh)
