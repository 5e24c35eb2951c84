"""The typed recipe: one dataclass per stage, loaded from YAML with OmegaConf.

OmegaConf's structured configs give us a typed merge of YAML and `--set key=value` dotlists for free:
unknown keys and wrong types are errors that name the key. We add the file name to those errors, resolve
relative paths against the recipe file's folder, and check inputs exist before any stage starts.
"""

from __future__ import annotations

import glob
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

STAGES = ("corpus", "tokenizer", "pretrain", "sft", "dpo", "release")
TRAINING_STAGES = ("pretrain", "sft", "dpo")


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file and the key."""


# ---------------------------------------------------------------- corpus
@dataclass
class CorpusSource:
    name: str = MISSING
    paths: list[str] = field(default_factory=list)  # files or globs, relative to the recipe file
    text_field: str = "text"
    id_field: str = "id"


@dataclass
class QualityRules:
    """Thin Japanese rules; each is named in the report when it drops a document."""

    min_chars: int = 50
    max_chars: int = 200_000
    min_japanese_fraction: float = 0.5  # hiragana + katakana + kanji over non-space characters
    min_hiragana_fraction: float = 0.1  # Swallow-style: real Japanese prose has particles in hiragana


@dataclass
class CorpusConfig:
    sources: list[CorpusSource] = field(default_factory=list)
    nfkc: bool = True
    rules: QualityRules = field(default_factory=QualityRules)
    mask_pii: bool = True
    exact_dedup: bool = True
    num_shards: int = 2
    workers: int = 2


# ---------------------------------------------------------------- tokenizer
@dataclass
class TokenizerConfig:
    vocab_size: int = 4000
    model_type: str = "unigram"  # unigram | bpe
    byte_fallback: bool = True
    split_digits: bool = True
    character_coverage: float = 0.9995
    max_piece_length: int = 8
    input_sentence_size: int = 2_000_000  # sampled lines: bounds the trainer's memory
    validation_fraction: float = 0.05  # documents held back as validation token shards
    seed: int = 17
    # Trainer details (see kamado/tokenizer/train.py and docs of each in the tokenizer README section).
    normalization: str = "identity"  # identity | nfkc | nmt_nfkc: normalization belongs to the corpus stage
    shuffle_input_sentence: bool = True
    max_sentence_length: int = 16384  # bytes; longer lines are skipped by the trainer
    seed_sentencepiece_size: int = 1_000_000
    split_by_unicode_script: bool = True  # false: pieces may span kana/kanji and punctuation (e.g. "ました。")
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
    encode_workers: int = 2  # processes encoding corpus shards into token shards


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

    nproc_per_node: int = 2
    nodes: int = 1
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seq_len: int = 128
    micro_batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = 100
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 1234
    schedule: str = "cosine"  # cosine: warmup then cosine | wsd: warmup, stable, then linear decay
    decay_fraction: float = 0.1  # wsd: the last fraction of steps that decays to min_lr_ratio
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    activation_checkpointing: bool = False
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states in CPU memory (stage >= 1)
    offload_params: bool = False  # ZeRO-Infinity style parameter offload to CPU (stage 3 only)
    eval_every: int = 0  # validation loss every K steps (0: only at the end)
    eval_batches: int = 8
    max_nonfinite_in_a_row: int = 5  # non-finite losses skip the update; this many in a row stop the run
    spike_sigma: float = 4.0  # a loss this many standard deviations above the recent mean is logged as a spike
    # Raw DeepSpeed keys merged into the generated config (e.g. {"zero_optimization": {"overlap_comm": true}});
    # a key the recipe already sets to another value is an error, so the recipe stays the one source of truth.
    deepspeed_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainConfig(TrainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    # Weighted mixture of token-shard folders; empty: the tokenizer stage's own shards.
    data: list[TokenSource] = field(default_factory=list)


@dataclass
class SFTConfig(TrainConfig):
    data: list[str] = field(default_factory=list)  # JSONL files: instruction/input/output records
    lr: float = 1e-3
    max_steps: int = 40
    warmup_steps: int = 4
    seq_len: int = 256
    validation_fraction: float = 0.1


@dataclass
class DPOConfig(TrainConfig):
    data: list[str] = field(default_factory=list)  # JSONL files: prompt/chosen/rejected records
    beta: float = 0.1
    lr: float = 5e-4
    max_steps: int = 20
    warmup_steps: int = 2
    seq_len: int = 256
    micro_batch_size: int = 2


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
    """One evaluation task. Names: perplexity, jcommonsenseqa, jnli, jsquad (see kamado/release/eval/)."""

    name: str = MISSING
    path: Optional[str] = None  # JSON/JSONL file; perplexity: None = the tokenizer stage's held-back documents
    shots: int = 0
    fewshot_path: Optional[str] = None  # where shot examples come from (None: the same file, never the item itself)
    limit: Optional[int] = None  # score the first `limit` items only
    template: Optional[str] = None  # str.format template of one item's prompt (None: the task's default)
    max_new_tokens: int = 32  # generation tasks (jsquad)


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
    array_parallelism: int = 64
    max_requeues: int = 3
    extra_sbatch: list[str] = field(default_factory=list)  # raw "#SBATCH" lines without the prefix
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, venv)


@dataclass
class Recipe:
    name: str = MISSING
    workdir: str = MISSING  # relative to the recipe file
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
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
    recipe.sft.data = [_abs(base, p) for p in recipe.sft.data]
    for source in recipe.pretrain.data:
        source.path = _abs(base, source.path)
    if recipe.pretrain.model.init_from:
        recipe.pretrain.model.init_from = _abs(base, recipe.pretrain.model.init_from)
    recipe.dpo.data = [_abs(base, p) for p in recipe.dpo.data]
    if recipe.tokenizer.extend_from:
        recipe.tokenizer.extend_from = _abs(base, recipe.tokenizer.extend_from)
    for task in recipe.eval.tasks:
        task.path = _abs(base, task.path) if task.path else None
        task.fewshot_path = _abs(base, task.fewshot_path) if task.fewshot_path else None


def _check_values(recipe: Recipe, where: str) -> None:
    for i, stage in enumerate(recipe.stages):
        if stage not in STAGES:
            raise RecipeError(f"{where}: key 'stages[{i}]': unknown stage '{stage}' (known: {', '.join(STAGES)})")
    order = [STAGES.index(s) for s in recipe.stages]
    if order != sorted(order) or len(set(order)) != len(order):
        raise RecipeError(f"{where}: key 'stages': stages must be listed once each, in the order {', '.join(STAGES)}")
    if recipe.tokenizer.model_type not in ("unigram", "bpe"):
        raise RecipeError(f"{where}: key 'tokenizer.model_type': must be unigram or bpe, not {recipe.tokenizer.model_type!r}")
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
        for key in ("max_steps", "micro_batch_size", "seq_len", "nproc_per_node", "nodes", "grad_accum"):
            if getattr(cfg, key) < 1:
                raise RecipeError(f"{where}: key '{stage}.{key}': must be at least 1")
    if recipe.corpus.num_shards < 1:
        raise RecipeError(f"{where}: key 'corpus.num_shards': must be at least 1")
    _check_release_eval(recipe, where)


EVAL_TASKS = ("perplexity", "jcommonsenseqa", "jnli", "jsquad")


def _check_release_eval(recipe: Recipe, where: str) -> None:
    rel = recipe.release
    if rel.dtype not in ("float32", "bfloat16"):
        raise RecipeError(f"{where}: key 'release.dtype': must be float32 or bfloat16, not {rel.dtype!r}")
    if rel.from_stage is not None and rel.from_stage not in TRAINING_STAGES:
        raise RecipeError(f"{where}: key 'release.from_stage': must be one of {', '.join(TRAINING_STAGES)}, not {rel.from_stage!r}")
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
        for i, source in enumerate(recipe.corpus.sources):
            files = expand_paths(source.paths)
            if not files:
                raise RecipeError(
                    f"{where}: key 'corpus.sources[{i}].paths' ({source.name}): no file matches {source.paths}")
            if not any(_has_a_record(f) for f in files):
                raise RecipeError(
                    f"{where}: key 'corpus.sources[{i}].paths' ({source.name}): empty corpus: {', '.join(files)} hold no record")
    if "pretrain" in stages:
        for j, source in enumerate(recipe.pretrain.data):
            if not os.path.isfile(os.path.join(source.path, "index.json")):
                raise RecipeError(f"{where}: key 'pretrain.data[{j}].path': no token shards (index.json) in {source.path}")
            if source.weight <= 0:
                raise RecipeError(f"{where}: key 'pretrain.data[{j}].weight': must be positive")
        init = recipe.pretrain.model.init_from
        if init and not os.path.isfile(os.path.join(init, "config.json")):
            raise RecipeError(f"{where}: key 'pretrain.model.init_from': no HF checkpoint (config.json) in {init}")
    for stage in ("sft", "dpo"):
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
            if f and not os.path.isfile(f):
                raise RecipeError(f"{where}: key 'eval.tasks[{i}].{key}' ({task.name}): file not found: {f}")


def expand_paths(patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        files.extend(m for m in matches if os.path.isfile(m))
    return files


def _has_a_record(path: str) -> bool:
    from kamado.corpus.readers import open_text

    with open_text(path) as fh:
        return any(line.strip() for line in fh)
