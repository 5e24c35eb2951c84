"""Fault injection on the stage contract (issue #14): recipe edits that used to wipe a stage folder (checkpoints
and all), folders kamado never made, inputs inside the workdir, a model name that escapes it, changed inputs
that went unnoticed. Each test fails on the old contract (fingerprint = whole config, rmtree on mismatch)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kamado.cli import main
from kamado.recipe import RecipeError, load_recipe
from kamado.local import run_stages
from kamado.stage import STARTED, StageConflict, Workspace, writer_identity
from tests.helpers import ROOT, tiny_recipe

RECIPE = str(ROOT / "recipes" / "tiny-cpu.yaml")
# The `tiny_run` fixture's overrides (tests/conftest.py): its pretrain stage trained 40 steps on 2 ranks,
# checkpoints at steps 20 and 40. Reusing that run (copied) costs these tests no training of their own.
PRETRAIN = ["pretrain.max_steps=40", "pretrain.checkpoint_every=20", "pretrain.log_every=10", "sft.max_steps=16",
            "dpo.max_steps=10"]


def tree(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its size: what 'nothing was lost' compares."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def done(ws: Workspace, stage: str) -> dict:
    return json.loads((ws.stage_dir(stage) / "DONE.json").read_text())


@pytest.fixture
def pretrained(tiny_run) -> Path:
    """The finished demo run; each test works on its own copy of the workdir."""
    same = Workspace(tiny_recipe(Path(tiny_run.workdir).parent, *PRETRAIN))  # PRETRAIN matches tiny_run's overrides
    assert all(same.is_done(stage) for stage in tiny_run.stages)
    return Path(tiny_run.workdir)


def copy_run(pretrained: Path, tmp_path: Path) -> Path:
    shutil.copytree(pretrained, tmp_path / "run")
    return tmp_path / "run"


def cli(tmp_path: Path, *args: str) -> int:
    sets = [x for o in PRETRAIN for x in ("--set", o)]
    return main([args[0], RECIPE, "--set", f"workdir={tmp_path / 'run'}", *sets, *args[1:]])


@pytest.mark.slow
@pytest.mark.distributed
def test_operational_keys_never_redo_a_stage(pretrained, tmp_path):
    run = copy_run(pretrained, tmp_path)
    before = tree(run / "pretrain")
    recipe = tiny_recipe(tmp_path, *PRETRAIN, "pretrain.log_every=1", "pretrain.checkpoint_every=3",
                         "pretrain.keep_checkpoints=5", "pretrain.eval_every=2", "pretrain.eval_batches=2",
                         "corpus.workers=1", "tokenizer.encode_workers=1")
    assert set(run_stages(recipe, list(recipe.stages), lambda s: None).values()) == {"skipped"}
    assert tree(run / "pretrain") == before


@pytest.mark.slow
@pytest.mark.distributed
def test_raising_max_steps_keeps_the_checkpoints_and_resumes(pretrained, tmp_path, capfd):
    run = copy_run(pretrained, tmp_path)
    ws = Workspace(tiny_recipe(tmp_path, *PRETRAIN))
    first_fp, first_rows = done(ws, "pretrain")["fingerprint"], (run / "pretrain" / "metrics.jsonl").read_text()
    capfd.readouterr()
    assert cli(tmp_path, "run", "--only", "pretrain", "--set", "pretrain.max_steps=42") == 0
    out = capfd.readouterr().out
    assert "trained 40 steps, the recipe asks 42" in out and "at step 40" in out  # the loop resumed, not restarted
    marker = done(ws, "pretrain")
    assert marker["fingerprint"] == first_fp and marker["trained_steps"] == 42 and marker["max_steps"] == 42
    steps = [json.loads(line)["step"] for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 43))  # steps 1-40 from the first run, 41-42 trained on
    assert (run / "pretrain" / "metrics.jsonl").read_text().startswith(first_rows.split("\n", 1)[0])
    assert (run / "pretrain" / "checkpoints" / "step0000042").is_dir()
    assert not list(run.glob("*.superseded-*"))  # nothing moved aside, nothing deleted


@pytest.mark.slow
@pytest.mark.distributed
def test_lowering_max_steps_below_what_was_trained_is_refused_before_any_work(pretrained, tmp_path, capsys):
    run = copy_run(pretrained, tmp_path)
    before = tree(run)
    assert cli(tmp_path, "run", "--set", "pretrain.max_steps=30") == 2
    err = capsys.readouterr().err
    assert "pretrain.max_steps=30 is below the 40 steps already trained" in err and "--fresh pretrain" in err
    assert tree(run) == before  # not even recipe.resolved.yaml was rewritten


@pytest.mark.slow
@pytest.mark.distributed
def test_a_changed_lr_moves_the_folder_aside_and_show_lists_it(pretrained, tmp_path, capsys):
    run = copy_run(pretrained, tmp_path)
    before = tree(run / "pretrain")
    ws = Workspace(tiny_recipe(tmp_path, *PRETRAIN, "pretrain.lr=1e-3"))
    log: list[str] = []
    ws.prepare("pretrain", log.append)  # what `kamado run` does before training the changed stage
    (aside,) = run.glob("pretrain.superseded-*")
    assert tree(aside) == {**before, "SUPERSEDED.json": (aside / "SUPERSEDED.json").stat().st_size}
    assert (aside / "checkpoints" / "step0000040").is_dir()
    assert "pretrain.lr: 0.003 → 0.001" in log[0] and str(aside) in log[0]
    assert sorted(p.name for p in (run / "pretrain").iterdir()) == [".kamado", STARTED]
    capsys.readouterr()
    assert cli(tmp_path, "show", "--set", "pretrain.lr=1e-3") == 0
    out = capsys.readouterr().out
    assert aside.name in out and "pretrain.lr: 0.003 → 0.001" in out
    # `kamado clean` lists, then with --yes deletes only what was moved aside
    assert cli(tmp_path, "clean") == 0 and aside.is_dir()
    assert cli(tmp_path, "clean", "--yes") == 0 and not aside.exists()
    assert (run / "tokenizer" / "DONE.json").is_file() and (run / "pretrain" / STARTED).is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_fresh_moves_the_stage_aside_even_when_nothing_changed(pretrained, tmp_path):
    from kamado.local import start_fresh

    run = copy_run(pretrained, tmp_path)
    recipe = tiny_recipe(tmp_path, *PRETRAIN)
    start_fresh(recipe, ["pretrain"], lambda s: None)
    (aside,) = run.glob("pretrain.superseded-*")
    assert json.loads((aside / "SUPERSEDED.json").read_text())["changes"] == ["--fresh"]
    assert not (run / "pretrain").exists() and not Workspace(recipe).is_done("pretrain")


def test_an_unmarked_folder_with_a_stage_name_is_refused_before_any_work(tmp_path, capsys):
    mine = tmp_path / "run" / "tokenizer"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("not kamado's")
    assert main(["run", RECIPE, "--set", f"workdir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "did not create" in err
    assert (mine / "notes.txt").read_text() == "not kamado's"
    assert not (tmp_path / "run" / "corpus").exists()  # refused before the first stage


def test_workdir_dot_with_a_source_under_corpus_is_refused_and_the_input_survives(tmp_path, capsys):
    raw = tmp_path / "corpus" / "raw.jsonl"
    raw.parent.mkdir()
    shutil.copy(ROOT / "examples" / "data" / "corpus" / "prose.jsonl", raw)
    content = raw.read_bytes()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: overlap\nworkdir: .\nstages: [corpus, tokenizer]\n"
                      "corpus:\n  sources:\n    - {name: raw, paths: [corpus/raw.jsonl]}\n")
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "corpus.sources[0].paths" in err and "inside the stage folder" in err
    assert raw.read_bytes() == content and sorted(p.name for p in raw.parent.iterdir()) == ["raw.jsonl"]
    # a workdir inside a source folder would read kamado's own outputs as corpus input
    inside = tmp_path / "inside.yaml"
    inside.write_text(recipe.read_text().replace("workdir: .", "workdir: corpus/run").replace("corpus/raw.jsonl", "corpus"))
    with pytest.raises(RecipeError, match="lies inside the source folder"):
        load_recipe(inside)
    # the same check after `--workdir` replaces the recipe's
    (tmp_path / "ok.yaml").write_text(recipe.read_text().replace("workdir: .", "workdir: elsewhere"))
    assert main(["show", str(tmp_path / "ok.yaml"), "--workdir", str(tmp_path)]) == 2
    assert "inside the stage folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "", "..", ".hidden", "x\ny"])
def test_release_model_name_must_be_a_plain_name(tmp_path, name):
    with pytest.raises(RecipeError, match="release.model_name"):
        tiny_recipe(tmp_path, f"release.model_name={json.dumps(name)}")


@pytest.mark.parametrize("key", ["checkpoint_every", "keep_checkpoints", "log_every"])
def test_zero_cadence_and_keep_count_are_refused_at_load(tmp_path, key):
    with pytest.raises(RecipeError, match=f"pretrain.{key}"):
        tiny_recipe(tmp_path, f"pretrain.{key}=0")


def test_appended_corpus_source_reruns_corpus_and_every_later_stage(tmp_path):
    source = tmp_path / "data" / "prose.jsonl"
    source.parent.mkdir()
    shutil.copy(ROOT / "examples" / "data" / "corpus" / "prose.jsonl", source)
    sets = ["corpus.sources=[{name: prose, paths: [" + str(source) + "]}]", "corpus.dedup.near=false"]
    recipe = tiny_recipe(tmp_path, *sets)
    stages = ["corpus", "tokenizer"]
    assert run_stages(recipe, stages, lambda s: None) == {"corpus": "done", "tokenizer": "done"}
    docs_in = done(Workspace(recipe), "corpus")["counts"]["docs_in"]
    import os
    import time

    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content: nothing to redo
    assert run_stages(tiny_recipe(tmp_path, *sets), stages, lambda s: None) == {"corpus": "skipped", "tokenizer": "skipped"}
    with open(source, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "appended", "text": "追記された文書です。" * 20}, ensure_ascii=False) + "\n")
    log: list[str] = []
    ws = Workspace(tiny_recipe(tmp_path, *sets))
    assert run_stages(ws.recipe, ["corpus"], log.append) == {"corpus": "done"}
    assert done(ws, "corpus")["counts"]["docs_in"] == docs_in + 1
    assert any(f"input {source} changed" in line for line in log)
    # the tokenizer is no longer done; preparing it (what its run starts with) moves its old folder aside
    assert not ws.is_done("tokenizer")
    ws.prepare("tokenizer", log.append)
    assert "the stage before it (corpus) was redone" in log[-1]
    assert {p.name.split(".")[0] for p in (tmp_path / "run").glob("*.superseded-*")} == {"corpus", "tokenizer"}


def test_edited_sft_data_changes_the_sft_fingerprint_and_later_stages_follow(tmp_path):
    data = tmp_path / "sft.jsonl"
    shutil.copy(ROOT / "examples" / "data" / "sft" / "instructions.jsonl", data)
    recipe = tiny_recipe(tmp_path, f"sft.data=[{data}]")
    ws = Workspace(recipe)
    before = ws.fingerprint("sft")
    data.write_text(data.read_text(encoding="utf-8").replace("。", "．", 1), encoding="utf-8")  # same size, new content
    assert ws.fingerprint("sft") != before
    assert Workspace(tiny_recipe(tmp_path, f"sft.data=[{data}]", "sft.log_every=1")).fingerprint("sft") == ws.fingerprint("sft")


def test_huge_inputs_are_hashed_on_samples_and_cached(tmp_path):
    import time

    from kamado.inputs import CACHE_FILE, SAMPLE_ABOVE, InputHasher

    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(SAMPLE_ABOVE + 1)  # sparse: cheap to make
    (tmp_path / "work").mkdir()
    hasher = InputHasher(tmp_path / "work")
    start = time.perf_counter()
    first = hasher.identity(str(big))
    assert first["sampled"] and first["size"] == SAMPLE_ABOVE + 1 and time.perf_counter() - start < 2
    hasher.save()
    cached = json.loads((tmp_path / "work" / CACHE_FILE).read_text())
    assert list(cached.values()) == [first["blake2b"]]
    with open(big, "r+b") as fh:  # an edit in the tail block is seen
        fh.seek(SAMPLE_ABOVE - 10)
        fh.write(b"edited")
    assert InputHasher(tmp_path / "work").identity(str(big))["blake2b"] != first["blake2b"]


def test_a_live_run_with_another_fingerprint_keeps_its_folder(tmp_path):
    recipe = tiny_recipe(tmp_path)
    ws = Workspace(recipe)
    ws.prepare("corpus", lambda s: None)
    (ws.stage_dir("corpus") / "shard-0.partial").write_text("being written")
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = json.loads((ws.stage_dir("corpus") / STARTED).read_text())
        me = writer_identity()
        started.update(pid=other.pid, pid_started=_start_of(other.pid), host=me["host"])
        (ws.stage_dir("corpus") / STARTED).write_text(json.dumps(started))
        changed = Workspace(tiny_recipe(tmp_path, "corpus.num_shards=3"))
        with pytest.raises(StageConflict, match=f"pid {other.pid}"):
            changed.prepare("corpus", lambda s: None)
        assert (ws.stage_dir("corpus") / "shard-0.partial").read_text() == "being written"
    finally:
        other.kill()
        other.wait()
    # once that process is gone the folder is moved aside, never deleted
    Workspace(tiny_recipe(tmp_path, "corpus.num_shards=3")).prepare("corpus", lambda s: None)
    (aside,) = (tmp_path / "run").glob("corpus.superseded-*")
    assert (aside / "shard-0.partial").read_text() == "being written"


def _start_of(pid: int) -> int | None:
    from kamado.stage import _process_start

    return _process_start(pid)


def test_lowering_max_steps_below_an_unfinished_runs_checkpoint_is_refused(tmp_path):
    ws = Workspace(tiny_recipe(tmp_path, "pretrain.max_steps=30"))
    ws.prepare("pretrain", lambda s: None)  # a run that was stopped after its step-20 checkpoint
    (ws.stage_dir("pretrain") / "checkpoints" / "step0000020").mkdir(parents=True)
    ws.check_steps("pretrain")  # 30 >= 20: resumes
    lowered = Workspace(tiny_recipe(tmp_path, "pretrain.max_steps=10"))
    with pytest.raises(StageConflict, match="below the 20 steps already trained"):
        lowered.preflight(["pretrain"])
    lowered.preflight(["pretrain"], fresh=["pretrain"])  # --fresh: trains 10 steps anew
