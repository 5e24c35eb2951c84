"""The typed recipe: one dataclass per stage, loaded from YAML with OmegaConf.

OmegaConf's structured configs give us a typed merge of YAML and `--set key=value` dotlists for free:
unknown keys and wrong types are errors that name the key. We add the file name to those errors, resolve
relative paths against the recipe file's folder, and check inputs exist before any stage starts.
"""

from __future__ import annotations

import os
from dataclasses import field, make_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, List

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kamado.corpus.config import CorpusConfig, QualityRules
from kamado.pipeline import PIPELINE, Pipeline, current
from kamado.eval.config import EVAL_TASKS, EvalConfig
from kamado.train.config import TrainConfig

class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file and the key."""


class RecipeBase:
    """What every recipe has besides its sections (the dataclass is made from the pipeline: `recipe_type`)."""

    name: str
    workdir: str
    stages: list[str]

    def stage_config(self, stage: str) -> Any:
        """The config a stage's fingerprint covers: its section, with the sections it also depends on (release:
        eval, so a changed eval section redoes it) as one dataclass."""
        spec = current().spec(stage)
        if not spec.also_covers:
            return getattr(self, stage)
        covered = _covered_type(stage, spec.config, tuple((s, type(getattr(self, s))) for s in spec.also_covers))
        return covered(**{name: getattr(self, name) for name in (stage, *spec.also_covers)})

    def __reduce__(self):  # pickled by value and the pipeline's name: a Slurm job rebuilds it with its own class
        return _rebuild_recipe, (dict(self.__dict__),)


@lru_cache(maxsize=None)
def recipe_type(pipeline: Pipeline) -> type:
    """The recipe dataclass of `pipeline`: name, workdir, stages, then one section per stage and per extra section
    (each typed by the dataclass its package owns), so OmegaConf checks every key of every section."""
    fields: list[tuple[str, Any, Any]] = [
        ("name", str, field(default=MISSING)),
        ("workdir", str, field(default=MISSING)),  # relative to the recipe file
        ("stages", List[str], field(default_factory=lambda: list(pipeline.default))),
    ]
    fields += [(spec.name, spec.config, field(default_factory=spec.config)) for spec in pipeline.stages]
    fields += [(name, cls, field(default_factory=cls)) for name, cls in pipeline.sections]
    return make_dataclass("Recipe", fields, bases=(RecipeBase,), namespace={"__module__": __name__})


@lru_cache(maxsize=None)
def _covered_type(stage: str, config: type, others: tuple[tuple[str, type], ...]) -> type:
    return make_dataclass(f"{stage.capitalize()}StageConfig", [(stage, config), *others], namespace={"__module__": __name__})


def _rebuild_recipe(state: dict) -> Any:
    recipe = recipe_type(current()).__new__(recipe_type(current()))
    recipe.__dict__.update(state)
    return recipe


Recipe = recipe_type(PIPELINE)  # kamado's own; a KAMADO_PIPELINE recipe has the same fields plus its stages'


def stage_names() -> tuple[str, ...]:
    return current().names


# ---------------------------------------------------------------- loading
def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Load, type-check and validate a recipe; relative paths become absolute (against the recipe's folder)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    schema = OmegaConf.structured(recipe_type(current()))
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
    merged = OmegaConf.merge(OmegaConf.structured(recipe_type(current())), OmegaConf.create(data))
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
    STAGES = current().names
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
    for stage in current().training:
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
    STAGES = current().names
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



def _check_release_eval(recipe: Recipe, where: str) -> None:
    rel = recipe.release
    bad_name = plain_name_problem(rel.model_name)
    if bad_name:  # the release stage writes (and replaces) <workdir>/release/<model_name>: nothing else
        raise RecipeError(f"{where}: key 'release.model_name': {bad_name}, not {rel.model_name!r}")
    if rel.dtype not in ("float32", "bfloat16"):
        raise RecipeError(f"{where}: key 'release.dtype': must be float32 or bfloat16, not {rel.dtype!r}")
    policy = current().policy
    if rel.from_stage is not None and rel.from_stage not in policy:  # a reward model is not a release
        raise RecipeError(f"{where}: key 'release.from_stage': must be one of {', '.join(policy)}, not {rel.from_stage!r}")
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
