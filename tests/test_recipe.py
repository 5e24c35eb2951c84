"""Recipe loading: typed, unknown keys and wrong types are errors naming the key and the file."""

from pathlib import Path

import pytest

from kamado.recipe import RecipeError, check_inputs, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8")
    return p


# Recipes that start from another recipe's run: those inputs exist only once it ran, so the test named here checks
# them against that run (and this one checks the rest).
FROM_ANOTHER_RUN = {"continued-pretraining.yaml": "tests/finetune/test_continued_pretraining.py"}


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_its_inputs_exist(recipe):
    r = load_recipe(recipe)
    check_inputs(r, ["corpus"] if recipe.name in FROM_ANOTHER_RUN else r.stages, str(recipe))
    assert r.stages[0] == "corpus" and Path(r.workdir).is_absolute()


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "name: x\nworkdir: w\npretrain:\n  lrr: 1e-3\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    assert str(p) in str(err.value) and "lrr" in str(err.value)


def test_a_section_the_file_does_not_name_is_its_defaults_and_still_checked(tmp_path):
    """Only the sections a file or --set names go through OmegaConf's typed merge (the start-up of a small run);
    the others are their dataclass defaults: the same recipe as the file with every section written out, and an
    unknown top-level key, or a bad value set on an unnamed section, is still an error naming it."""
    from kamado.recipe import to_dict, to_yaml

    short = write(tmp_path, "name: x\nworkdir: w\nstages: [corpus]\ncorpus:\n  sources: [{name: s, paths: [a.jsonl]}]\n")
    recipe = load_recipe(short, ["sft.lr=3e-5"])
    full = tmp_path / "full.yaml"
    full.write_text(to_yaml(recipe), encoding="utf-8")
    assert to_dict(load_recipe(full)) == to_dict(recipe) and recipe.sft.lr == 3e-5
    assert recipe.pretrain.max_steps == type(recipe.pretrain)().max_steps
    for text, overrides, key in (("name: x\nworkdir: w\npretrian: {}\n", [], "pretrian"),
                                 ("name: x\nworkdir: w\n", ["dpo.beta=lots"], "dpo.beta"),
                                 ("name: x\nworkdir: w\n", ["dpo.beta=-1"], "dpo.beta")):
        with pytest.raises(RecipeError, match=key):
            load_recipe(write(tmp_path, text), overrides)


BASE = "name: x\nworkdir: w\nstages: [corpus]\ncorpus:\n  sources: [{name: s, paths: [a.jsonl], rules: {RULES}}]\n  CORPUS\n"
# Values each path must read alike: plain values (built without OmegaConf) and values only OmegaConf converts,
# reads another way, or refuses (those fall back to it). RULES= goes in a source's rules, CORPUS= in corpus,
# a name/stages line replaces the recipe's own, anything else is added at the top level.
SNIPPETS = [
    "", "pretrain: {lr: 1e-3}", "pretrain: {lr: '2e-4'}", "pretrain: {lr: 1}", "pretrain: {lr: .inf}", "pretrain: {lr: nan}",
    "pretrain: {lr: true}", "pretrain: {lr: 0x10}", "tokenizer: {vocab_size: 8000.0}", "tokenizer: {vocab_size: '8000'}",
    "tokenizer: {vocab_size: 1_000}", "CORPUS=nfkc: yes", "CORPUS=nfkc: 1", "CORPUS=dedup: {near: true, num_perm: 100}",
    "CORPUS=unknown: 1", "tokenizer: {model_type: bpe}", "tokenizer: {model_type: BPE}", "release: {dtype: bf16}",
    "name: 123", "name: '123'", "name: 1e3", "name: ???", "name: ${workdir}", "name: 2024-01-01", "name: [a]",
    "stages: corpus", "stages: [corpus, tokenizer]", "pretrain: {deepspeed_extra: {a: {b: '1e-3'}}}",
    "tokenizer: {source_weights: {s: 2}}", "tokenizer: {source_weights: {s: x}}", "pretrian: {}", "pretrain: []",
    "RULES=min_chars: 5", "RULES=min_chars: '5'", "RULES=min_chars: 5.5", "RULES=max_symbol_ratio: '0.5'",
    "RULES=nope: 1", "workdir: w2\nworkdir: w3", "pretrain: {lr: 1e-3, lr: 2e-3}",
]


def _snippet_recipe(tmp_path: Path, snippet: str) -> Path:
    kind, _, body = snippet.partition("=") if snippet[:6] in ("RULES=", "CORPUS") else ("", "", snippet)
    lines = BASE.replace("RULES", body if kind == "RULES" else "").replace("CORPUS", body if kind == "CORPUS" else "")
    lines = [line for line in lines.splitlines() if line.strip()]
    if not kind and body:
        top = body.split(":")[0]
        lines = [line for line in lines if not line.startswith(top + ":") or top not in ("name", "stages")] + [body]
    return write(tmp_path, "\n".join(lines) + "\n")


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_a_recipe_built_without_omegaconf_is_the_one_omegaconf_builds(tmp_path, snippet):
    """load_recipe builds a recipe of plain values without OmegaConf (kamado/plain_config.py) and leaves every
    other to it: both paths give the same recipe, or both refuse it with the same message."""
    import json

    from kamado.recipe import _check_values, _load_typed, _resolve_paths, to_dict

    p = _snippet_recipe(tmp_path, snippet)

    def typed():
        r = _load_typed(p, None)
        _resolve_paths(r, p.parent.resolve())
        _check_values(r, str(p))
        return to_dict(r)

    outcomes = []
    for load in (lambda: to_dict(load_recipe(p)), typed):
        try:
            outcomes.append(json.dumps(load(), sort_keys=True))  # as JSON: NaN equals NaN
        except RecipeError as exc:
            outcomes.append(f"error: {exc}")
    assert outcomes[0] == outcomes[1]


def test_a_plain_recipe_loads_without_importing_omegaconf():
    import subprocess
    import sys

    code = ("import sys; from kamado.recipe import load_recipe; import kamado.corpus.stage; "
            f"load_recipe({str(ROOT / 'recipes' / 'tiny-cpu.yaml')!r}); print(sorted(m for m in sys.modules if 'omegaconf' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wrong_type_names_key_and_file(tmp_path):
    p = write(tmp_path, "name: x\nworkdir: w\ntokenizer:\n  vocab_size: lots\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    assert str(p) in str(err.value) and "tokenizer.vocab_size" in str(err.value)


def test_unknown_stage_is_rejected(tmp_path):
    p = write(tmp_path, "name: x\nworkdir: w\nstages: [corpus, tokeniser]\n")
    with pytest.raises(RecipeError, match=r"stages\[1\].*tokeniser"):
        load_recipe(p)


def test_missing_required_key(tmp_path):
    p = write(tmp_path, "workdir: w\n")
    with pytest.raises(RecipeError, match="name"):
        load_recipe(p)


def test_set_overrides_are_typed_and_paths_resolve_against_the_recipe(tmp_path):
    p = write(tmp_path, "name: x\nworkdir: run\nsft:\n  data: [d/sft.jsonl]\n")
    r = load_recipe(p, ["pretrain.lr=3e-4", "pretrain.model.num_layers=4"])
    assert r.pretrain.lr == pytest.approx(3e-4) and r.pretrain.model.num_layers == 4
    assert r.workdir == str(tmp_path / "run") and r.sft.data == [str(tmp_path / "d" / "sft.jsonl")]
    with pytest.raises(RecipeError, match="pretrain.max_steps"):
        load_recipe(p, ["pretrain.max_steps=many"])


def test_missing_and_empty_inputs_fail_naming_the_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    p = write(tmp_path, "name: x\nworkdir: w\ncorpus:\n  sources:\n    - name: a\n      paths: [missing.jsonl]\n")
    with pytest.raises(RecipeError, match=r"corpus.sources\[0\].paths.*missing.jsonl"):
        check_inputs(load_recipe(p), ["corpus"], str(p))
    p = write(tmp_path, "name: x\nworkdir: w\ncorpus:\n  sources:\n    - name: a\n      paths: [empty.jsonl]\n")
    with pytest.raises(RecipeError, match="empty corpus.*empty.jsonl"):
        check_inputs(load_recipe(p), ["corpus"], str(p))
    p = write(tmp_path, "name: x\nworkdir: w\nsft:\n  data: [nope.jsonl]\n")
    with pytest.raises(RecipeError, match=r"sft.data\[0\].*nope.jsonl"):
        check_inputs(load_recipe(p), ["sft"], str(p))


@pytest.mark.parametrize("paths,workdir,refused", [
    ("['data/*.jsonl']", "data/run", False),  # one level: cannot reach into data/run/
    ("['data/**/*.jsonl']", "data/run", True),  # recursive glob over the workdir
    ("['data/*/*.jsonl']", "data", True),  # matches data/corpus/x.jsonl: a stage folder
    ("[data]", "data/run", True),  # a source folder holding the workdir
    ("[data/a.jsonl]", "run", False),
    ("[run/sft/a.jsonl]", "run", True),  # an input inside a stage folder (any stage's name)
])
def test_workdir_overlapping_a_corpus_source_is_refused(tmp_path, paths, workdir, refused):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "x"}\n')
    p = write(tmp_path, f"name: t\nworkdir: {workdir}\nstages: [corpus]\ncorpus:\n  sources:\n    - {{name: s, paths: {paths}}}\n")
    if refused:
        with pytest.raises(RecipeError, match="corpus.sources\\[0\\].paths"):
            load_recipe(p)
    else:
        load_recipe(p)
