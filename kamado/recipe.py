"""The typed recipe: one section per stage (each typed by the dataclass its package owns), loaded from YAML.

OmegaConf's structured configs give us a typed merge of YAML and `--set key=value` dotlists for free:
unknown keys, wrong types and choices out of a section's enums are errors that name the key. Here we add the
file name to every error, resolve the sections' path fields against the recipe file's folder, run each
section's own `validate`, check what spans sections (the stage list, a stage another one needs, the workdir
against the inputs), and check inputs exist before any stage starts (each section's `check_inputs`).
A recipe of plain values without --set is built without OmegaConf (kamado/plain_config.py: the same recipe,
~0.1 s less start-up); anything else, errors included, goes through OmegaConf.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import typing
from contextlib import contextmanager
from dataclasses import field, make_dataclass
from functools import lru_cache
from pathlib import Path
from enum import Enum
from typing import Any, Callable, Iterator, List

import yaml

from kamado.config import REQUIRED, ConfigError, RecipeError, omegaconf_message, resolve_paths, validate_tree
from kamado.eval.config import EvalConfig
from kamado.pipeline import PIPELINE, Pipeline, current
from kamado.plain_config import NotPlain, build, load_yaml


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
        ("name", str, field(default=REQUIRED)),
        ("workdir", str, field(default=REQUIRED)),  # relative to the recipe file
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
    recipe = None if overrides else _built_plainly(lambda: load_yaml(path.read_text(encoding="utf-8")))
    if recipe is None:
        recipe = _load_typed(path, overrides)
    _resolve_paths(recipe, path.parent.resolve())
    _check_values(recipe, str(path))
    return recipe


def _built_plainly(data: Callable[[], Any]) -> Recipe | None:
    """The recipe built without OmegaConf (kamado/plain_config.py), or None where OmegaConf builds it: a value
    it would convert, or an error it names (bad YAML included)."""
    try:
        return build(recipe_type(current()), data())
    except (NotPlain, yaml.YAMLError, UnicodeDecodeError):
        return None


def _load_typed(path: Path, overrides: list[str] | None) -> Recipe:
    """OmegaConf's typed merge of the file and the --set overrides, each error naming the file (or option) and key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        from_file = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: report with the file
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    schema = _schema(from_file, overrides)
    try:
        merged = OmegaConf.merge(schema, from_file)
    except OmegaConfBaseException as exc:
        raise RecipeError(f"{path}: {_describe(exc, OmegaConf.to_container(from_file))}") from exc
    if overrides:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise RecipeError(f"--set {' '.join(overrides)}: {_describe(exc)}") from exc
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise RecipeError(f"{path}: required key(s) missing: {', '.join(missing)}")
    return _complete(OmegaConf.to_object(merged))


def recipe_from_dict(data: dict, base_dir: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Same as load_recipe but from a dict (the resolved recipe a worker reads back)."""
    recipe = None if overrides else _built_plainly(lambda: data)
    if recipe is None:
        from omegaconf import OmegaConf

        from_dict = OmegaConf.create(data)
        merged = OmegaConf.merge(_schema(from_dict, overrides), from_dict)
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        recipe = _complete(OmegaConf.to_object(merged))
    _resolve_paths(recipe, Path(base_dir).resolve())
    return recipe


# OmegaConf builds a typed node for every field of every section it is given (~70 ms for kamado's whole recipe,
# most of a small `kamado run`'s start-up): it is given the sections the file or --set name; a section neither
# names is its dataclass's defaults, checked by its validate() like any other section (_check_values).
_ALWAYS = ("name", "workdir", "stages")


def _schema(data: Any, overrides: list[str] | None) -> Any:
    """The structured schema of the recipe's fields that `data` (a DictConfig) and the overrides name."""
    from omegaconf import OmegaConf

    full = recipe_type(current())
    if not OmegaConf.is_dict(data):  # not a mapping: the whole schema, whose merge gives OmegaConf's error
        return OmegaConf.structured(full)
    named = {str(k) for k in data.keys()} | {o.split("=", 1)[0].split(".", 1)[0].split("[", 1)[0] for o in overrides or []}
    return OmegaConf.structured(_reduced_type(full, frozenset(named)))


@lru_cache(maxsize=None)
def _reduced_type(full: type, named: frozenset[str]) -> type:
    fields = [(f.name, f.type, field(default=f.default, default_factory=f.default_factory))
              for f in dataclasses.fields(full) if f.name in named or f.name in _ALWAYS]
    return make_dataclass("Recipe", fields, bases=(RecipeBase,), namespace={"__module__": __name__})


def _complete(reduced: Any) -> Recipe:
    """The full recipe from a reduced one: the sections it lacks take their defaults."""
    return recipe_type(current())(**{f.name: getattr(reduced, f.name) for f in dataclasses.fields(reduced)})


def to_dict(obj: Any) -> dict:
    """A config as plain data (choices as their strings): DONE.json's config and the fingerprint hash this. The
    same dict OmegaConf's to_container gives, built directly (100x faster: every command hashes every stage)."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (OmegaConf's layout: keys in field order, block style, unicode as is)."""
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, allow_unicode=True, default_flow_style=False)


def load_recipe_for_cli(args: Any) -> Recipe:
    """`kamado ... RECIPE [--set K=V] [--workdir DIR]`: the recipe, with --workdir (checked again) replacing its own."""
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "workdir", None):
        recipe.workdir = os.path.abspath(args.workdir)
        check_workdir(recipe, "--workdir")
    return recipe


# ---------------------------------------------------------------- error messages
@contextmanager
def named(where: str) -> Iterator[None]:
    """A section's ConfigError ("key 'k': message") as a RecipeError with the file (or option) in front."""
    try:
        yield
    except ConfigError as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def _describe(exc: Exception, data: Any = None) -> str:
    """OmegaConf's error with its key. Inside a list element OmegaConf names the key within the element only
    (`format`, not `corpus.sources[1].format`): the element is found by merging each one on its own."""
    return (_locate(recipe_type(current()), data, "") if data is not None else None) or omegaconf_message(exc)


def _locate(cls: type, data: Any, prefix: str) -> str | None:
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return None
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        kind, args = hints.get(name), typing.get_args(hints.get(name))
        if typing.get_origin(kind) is list and args and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
            from omegaconf import OmegaConf
            from omegaconf.errors import OmegaConfBaseException

            for i, item in enumerate(value):
                try:
                    OmegaConf.merge(OmegaConf.structured(args[0]), item)
                except OmegaConfBaseException as exc:
                    where = f"{prefix}{name}[{i}]."
                    return _locate(args[0], item, where) or f"key '{where}{exc.full_key}': {str(exc).splitlines()[0]}"
        elif dataclasses.is_dataclass(kind):
            found = _locate(kind, value, f"{prefix}{name}.")
            if found:
                return found
    return None


# ---------------------------------------------------------------- paths
def _resolve_paths(recipe: Recipe, base: Path) -> None:
    """The workdir and every section's path fields (kamado.config.path_field), against the recipe's folder."""
    recipe.workdir = str(recipe.workdir if os.path.isabs(recipe.workdir) else (base / recipe.workdir).resolve())
    for name in _sections(recipe):
        resolve_paths(getattr(recipe, name), base)


def _sections(recipe: Recipe) -> list[str]:
    return [f.name for f in dataclasses.fields(recipe) if dataclasses.is_dataclass(getattr(recipe, f.name))]


# ---------------------------------------------------------------- checks
def _check_values(recipe: Recipe, where: str) -> None:
    """Each section's own checks (its `validate`), then what spans sections."""
    from kamado.slurm.validate import check_text  # light: values that reach sbatch scripts

    stages = current().names
    for i, stage in enumerate(recipe.stages):
        if stage not in stages:
            raise RecipeError(f"{where}: key 'stages[{i}]': unknown stage '{stage}' (known: {', '.join(stages)})")
    order = [stages.index(s) for s in recipe.stages]
    if order != sorted(order) or len(set(order)) != len(order):
        raise RecipeError(f"{where}: key 'stages': stages must be listed once each, in the order {', '.join(stages)}")
    with named(where):
        check_text("name", recipe.name)
        check_text("workdir", str(recipe.workdir))
        for name in _sections(recipe):
            validate_tree(getattr(recipe, name), name)
        _check_across_sections(recipe)
    check_workdir(recipe, where)


def validate_section(recipe: Recipe, name: str, where: str) -> None:
    """One section checked again after code changed it (`kamado eval --task`)."""
    with named(where):
        validate_tree(getattr(recipe, name), name)


def _check_across_sections(recipe: Recipe) -> None:
    ppo, staged = recipe.ppo, "ppo" in recipe.stages and "reward" not in recipe.stages
    if ppo.reward == "model" and staged:
        raise ConfigError("ppo.reward", "'model' needs the reward stage in 'stages'")
    if ppo.value_from == "reward" and staged:
        raise ConfigError("ppo.value_from", "'reward' needs the reward stage in 'stages'")
    policy, from_stage = current().policy, recipe.release.from_stage
    if from_stage is not None and from_stage not in policy:  # a reward model is not a release
        raise ConfigError("release.from_stage", f"must be one of {', '.join(policy)}, not {from_stage!r}")


def check_workdir(recipe: Recipe, where: str = "recipe") -> None:
    """Refuse a workdir that overlaps an input before any work: stage folders are moved aside when their config
    changes, so an input inside `<workdir>/<stage>/` would vanish from where the recipe says it is, and a workdir
    inside a source folder would make kamado's own outputs read as corpus input."""
    from kamado.inputs import stage_input_paths

    work = os.path.realpath(recipe.workdir)
    own_tokens = os.path.join(work, "tokenizer", "tokens")
    stages = current().names
    for stage in stages:
        for key, pattern in stage_input_paths(recipe, stage):
            static = _static_prefix(pattern)
            paths = [static] + (glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [])
            for path in map(os.path.realpath, paths):
                if key.startswith("pretrain.data") and path.startswith(own_tokens + os.sep):
                    continue  # this run's own token shards, mixed in by name: the tokenizer stage writes them
                for name in stages:
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
    if not glob.has_magic(pattern):
        return pattern
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return str(Path(*parts[:i])) if i else "."
    return pattern


def check_inputs(recipe: Recipe, stages: list[str], where: str = "recipe") -> None:
    """Before any work starts: every input the selected stages read exists and is not empty (each section's
    `check_inputs(key, workdir, stages)`; a stage's inputs include the sections it also covers: release, eval)."""
    with named(where):
        for stage in stages:
            for name in (stage, *current().spec(stage).also_covers):
                check = getattr(getattr(recipe, name), "check_inputs", None)
                if callable(check):
                    check(name, recipe.workdir, stages)


def check_eval_inputs(cfg: EvalConfig, where: str = "recipe") -> None:
    with named(where):
        cfg.check_files("eval")
