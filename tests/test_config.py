"""Stage configs (kamado/<package>/config.py on kamado/config.py): choices as enums OmegaConf checks, each
section's validate(), path fields resolved by one walk. (No import cycle: tests/test_structure.py.)"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from kamado.config import Choice, ConfigError, marked_keys, validate_tree
from kamado.inputs import stage_input_paths
from kamado.recipe import RecipeError, load_recipe, to_dict, to_yaml
from kamado.train.config import Precision

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("section, key, value", [
    ("tokenizer", "model_type", "wordpiece"), ("tokenizer", "normalization", "nfd"), ("pretrain", "precision", "bf17"),
    ("sft", "schedule", "linear"), ("dpo", "loss_type", "hinge"), ("ppo", "algorithm", "reinforce"),
    ("release", "dtype", "float16"), ("tokenizer", "required_chars", "all"),
])
def test_a_bad_choice_names_the_file_the_key_and_the_choices(tmp_path, section, key, value):
    p = write(tmp_path, f"name: x\nworkdir: w\n{section}:\n  {key}: {value}\n")
    with pytest.raises(RecipeError, match=re.escape(f"{p}: key '{section}.{key}': Invalid value '{value}'")):
        load_recipe(p)


def test_a_bad_choice_inside_a_list_names_the_element(tmp_path):
    """OmegaConf names only the key inside a list element; the recipe finds the element."""
    p = write(tmp_path, "name: x\nworkdir: w\ncorpus:\n  sources:\n    - {name: a, paths: [a]}\n"
                        "    - {name: b, paths: [b], html: sometimes}\n")
    with pytest.raises(RecipeError, match=re.escape(f"{p}: key 'corpus.sources[1].html': Invalid value 'sometimes'")):
        load_recipe(p)


def test_choices_read_write_and_compare_as_their_strings(tmp_path):
    r = load_recipe(write(tmp_path, "name: x\nworkdir: w\npretrain: {precision: bf16}\ncorpus:\n"
                                    "  sources: [{name: a, paths: [a], format: jsonl}]\n"))
    precision = r.pretrain.precision
    assert precision is Precision.bf16 and precision == "bf16" and precision in ("bf16", "fp16")
    assert {"bf16": 2}[precision] == 2 and f"{precision}" == str(precision) == "bf16" and f"{precision:>5}" == " bf16"
    assert json.dumps({"p": precision}) == '{"p": "bf16"}'
    assert to_dict(r.pretrain)["precision"] == "bf16" and type(to_dict(r.pretrain)["precision"]) is str
    assert "precision: bf16" in to_yaml(r) and "format: jsonl" in to_yaml(r)
    assert issubclass(type(r.corpus.sources[0].format), Choice) and r.corpus.sources[0].format == "jsonl"


def test_every_choice_member_is_named_by_its_value():
    """OmegaConf matches YAML strings against member names: a name that differs from its value would never load."""
    import kamado.corpus.config, kamado.finetune.config, kamado.release.config, kamado.tokenizer.config, kamado.train.config  # noqa: E401

    enums = [obj for mod in (kamado.corpus.config, kamado.finetune.config, kamado.release.config,
                             kamado.tokenizer.config, kamado.train.config)
             for obj in vars(mod).values() if isinstance(obj, type) and issubclass(obj, Choice) and obj is not Choice]
    assert len(enums) >= 15
    assert all(m.name == m.value for e in enums for m in e)


@pytest.mark.parametrize("override, key", [
    ("pretrain.zero_stage=4", "pretrain.zero_stage"),
    ("sft.offload_params=true", "sft.offload_params"),
    ("dpo.zero_stage=0", None),  # fine on its own...
    ("dpo.label_smoothing=0.5", "dpo.label_smoothing"),
    ("ppo.minibatches=0", "ppo.minibatches"),
    ("ppo.ppo_epochs=0", "ppo.ppo_epochs"),
    ("reward.warmup_steps=-1", "reward.warmup_steps"),
    ("corpus.num_shards=0", "corpus.num_shards"),
    ("corpus.dedup.max_posting=1", "corpus.dedup.max_posting"),
    ("corpus.dedup.rows=0", "corpus.dedup.rows"),
    ("release.model_name=a/b", "release.model_name"),
    ("release.from_stage=reward", "release.from_stage"),
    ("slurm.partition='gpu debug'", "slurm.partition"),
    ("pretrain.data=[{path: t, weight: 0}]", "pretrain.data[0].weight"),
    ("eval.tasks=[{name: jnli, path: x, shots: -1}]", "eval.tasks[0]"),
])
def test_each_section_validates_its_values(tmp_path, override, key):
    p = write(tmp_path, "name: x\nworkdir: w\n")
    if key is None:
        load_recipe(p, [override])
        return
    with pytest.raises(RecipeError, match=re.escape(f"{p}: key '{key}'")):
        load_recipe(p, [override])


def test_cross_section_checks_stay_with_the_recipe(tmp_path):
    p = write(tmp_path, "name: x\nworkdir: w\nstages: [corpus, tokenizer, pretrain, ppo]\nppo: {reward: model}\n")
    with pytest.raises(RecipeError, match="key 'ppo.reward': 'model' needs the reward stage"):
        load_recipe(p)
    load_recipe(p, ["stages=[corpus,tokenizer,pretrain,reward,ppo]"])


def test_validate_refuses_a_choice_set_in_code():
    """A config built in code skips OmegaConf: validate_tree checks its choices too, naming the key."""
    from kamado.train.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"key 'pretrain.precision': must be one of fp32, bf16, fp16, not 'bf17'"):
        validate_tree(PretrainConfig(precision="bf17"), "pretrain")  # type: ignore[arg-type]
    validate_tree(PretrainConfig(precision="bf16"), "pretrain")  # type: ignore[arg-type]


# Every path field of the recipe, set relative: each must come back absolute, against the recipe's folder.
RELATIVE = """name: x
workdir: run
stages: [corpus, tokenizer, pretrain, sft, reward, dpo, ppo, release]
corpus:
  sources:
    - {name: a, paths: [src/a.jsonl, "src/*.jsonl"],
       rules: {ng_word_files: [ng/own.txt], blocked_domains_file: bd/own.txt, quality_model: qm/own.bin, min_chars: 10}}
  rules: {ng_word_files: [ng/a.txt], blocked_domains_file: bd/a.txt, quality_model: qm/a.bin}
  dedup: {decontam_paths: [ev/a.jsonl]}
tokenizer: {extend_from: base/spm.model}
pretrain:
  data: [{path: tok/a}]
  model: {init_from: base/hf}
sft: {data: [d/sft.jsonl]}
reward: {data: [d/rm.jsonl]}
dpo: {data: [d/dpo.jsonl]}
ppo: {data: [d/ppo.jsonl]}
eval:
  tasks: [{name: jnli, path: ev/jnli.jsonl, fewshot_path: ev/shots.jsonl}]
"""


def _path_fields(cls: type) -> set[str]:
    """Names of every path field in cls and the dataclasses it holds (the marks the test expects to be covered)."""
    import typing

    out = set(marked_keys(cls, "path"))
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        inner = (typing.get_args(kind) or [kind])[0]
        if dataclasses.is_dataclass(inner):
            out |= _path_fields(inner)
    return out


def test_every_path_field_resolves_against_the_recipe_folder(tmp_path):
    r = load_recipe(write(tmp_path, RELATIVE))
    base = str(tmp_path)
    keys = {}
    for stage in r.stages:
        keys.update(stage_input_paths(r, stage))
    expected = {
        "corpus.sources[0].paths[0]": "src/a.jsonl", "corpus.sources[0].paths[1]": "src/*.jsonl",
        "corpus.sources[0].rules.ng_word_files[0]": "ng/own.txt", "corpus.sources[0].rules.blocked_domains_file": "bd/own.txt",
        "corpus.sources[0].rules.quality_model": "qm/own.bin", "corpus.rules.ng_word_files[0]": "ng/a.txt",
        "corpus.rules.blocked_domains_file": "bd/a.txt", "corpus.rules.quality_model": "qm/a.bin",
        "corpus.dedup.decontam_paths[0]": "ev/a.jsonl", "tokenizer.extend_from": "base/spm.model",
        "pretrain.data[0].path": "tok/a/index.json", "pretrain.model.init_from": "base/hf",
        "sft.data[0]": "d/sft.jsonl", "reward.data[0]": "d/rm.jsonl", "dpo.data[0]": "d/dpo.jsonl",
        "ppo.data[0]": "d/ppo.jsonl", "eval.tasks[0].path": "ev/jnli.jsonl", "eval.tasks[0].fewshot_path": "ev/shots.jsonl",
    }
    assert keys == {k: f"{base}/{v}" for k, v in expected.items()}
    assert r.workdir == f"{base}/run" and r.corpus.sources[0].rules["min_chars"] == 10
    # every marked field in the recipe's sections is in the recipe above (a new path field gets a line here)
    marked = {name for section in ("corpus", "tokenizer", "pretrain", "sft", "reward", "dpo", "ppo", "eval")
              for name in _path_fields(type(getattr(r, section)))}
    assert marked == {"paths", "ng_word_files", "blocked_domains_file", "quality_model", "decontam_paths",
                      "extend_from", "path", "init_from", "data", "fewshot_path"}
    # an absolute path stays as written; a disabled eval section is no release input
    r = load_recipe(write(tmp_path, RELATIVE), ["sft.data=[/abs/sft.jsonl]", "eval.enabled=false"])
    assert r.sft.data == ["/abs/sft.jsonl"] and stage_input_paths(r, "release") == []
