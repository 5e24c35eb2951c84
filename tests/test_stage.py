"""Stage contract: done-markers, skip, redo of a stage and everything after it, never anything before it."""

import json

import pytest

from kamado.cli import main
from kamado.local import run_stages, select_stages
from kamado.stage import Workspace
from tests.helpers import ROOT, tiny_recipe


def finished_at(ws: Workspace, stage: str) -> float:
    return json.loads((ws.stage_dir(stage) / "DONE.json").read_text())["finished_at"]


def test_skip_and_redo(tmp_path):
    log: list[str] = []
    recipe = tiny_recipe(tmp_path)
    ws = Workspace(recipe)
    assert run_stages(recipe, ["corpus", "tokenizer"], log.append) == {"corpus": "done", "tokenizer": "done"}
    first = {s: finished_at(ws, s) for s in ("corpus", "tokenizer")}

    assert run_stages(recipe, ["corpus", "tokenizer"], log.append) == {"corpus": "skipped", "tokenizer": "skipped"}
    assert any("corpus: done already" in line for line in log)

    # a changed tokenizer config redoes the tokenizer only
    changed = tiny_recipe(tmp_path, "tokenizer.vocab_size=2500")
    assert run_stages(changed, ["corpus", "tokenizer"], log.append) == {"corpus": "skipped", "tokenizer": "done"}
    assert finished_at(ws, "corpus") == first["corpus"]
    assert json.loads((ws.stage_dir("tokenizer") / "eval.json").read_text())["vocab_size"] <= 2500

    # a deleted corpus folder redoes the corpus and everything after it
    import shutil

    shutil.rmtree(ws.stage_dir("corpus"))
    assert run_stages(changed, ["corpus", "tokenizer"], log.append) == {"corpus": "done", "tokenizer": "done"}
    assert finished_at(ws, "tokenizer") > first["tokenizer"]


def test_a_stage_needs_the_one_before_it(tmp_path):
    recipe = tiny_recipe(tmp_path)
    with pytest.raises(RuntimeError, match="needs stage corpus"):
        run_stages(recipe, ["tokenizer"], lambda s: None)


def test_a_failed_stage_is_not_marked_done(tmp_path, capsys):
    recipe_path = str(ROOT / "recipes" / "tiny-cpu.yaml")
    base = ["--set", f"workdir={tmp_path / 'run'}"]
    assert main(["run", recipe_path, "--until", "corpus", *base]) == 0
    # a vocabulary too small for the sample's characters makes SentencePiece fail mid-stage
    assert main(["run", recipe_path, "--only", "tokenizer", *base, "--set", "tokenizer.vocab_size=300"]) == 1
    assert "tokenizer" in capsys.readouterr().err
    ws = Workspace(tiny_recipe(tmp_path))
    assert ws.is_done("corpus") and not (ws.stage_dir("tokenizer") / "DONE.json").exists()


def test_select_stages(tmp_path):
    recipe = tiny_recipe(tmp_path)
    assert select_stages(recipe, until="pretrain") == ["corpus", "tokenizer", "pretrain"]
    assert select_stages(recipe, only=["sft", "dpo"]) == ["sft", "dpo"]


def test_cli_rejects_unknown_stage_and_missing_input_before_any_work(tmp_path, capsys):
    recipe_path = str(ROOT / "recipes" / "tiny-cpu.yaml")
    assert main(["run", recipe_path, "--set", f"workdir={tmp_path / 'run'}", "--set", "stages=[corpus,tokeniser]"]) == 2
    assert "tokeniser" in capsys.readouterr().err
    assert main(["run", recipe_path, "--set", f"workdir={tmp_path / 'run'}", "--set", "sft.data=[/nonexistent/x.jsonl]"]) == 2
    err = capsys.readouterr().err
    assert "sft.data[0]" in err and "/nonexistent/x.jsonl" in err
    assert not (tmp_path / "run" / "corpus").exists()


def test_fingerprint_leaves_out_operational_and_extendable_keys(tmp_path):
    from kamado.pipeline import current

    STAGES, TRAINING_STAGES = current().names, current().training
    from kamado.stage import result_config

    recipe = tiny_recipe(tmp_path)
    for stage in TRAINING_STAGES:  # a subclass that changes max_steps' default keeps it extendable
        cfg = result_config(recipe.stage_config(stage))
        assert not {"max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every"} & set(cfg), stage
        assert "lr" in cfg and "seq_len" in cfg
    assert "workers" not in result_config(recipe.corpus) and "num_shards" in result_config(recipe.corpus)
    ws = Workspace(recipe)
    base = {s: ws.fingerprint(s) for s in STAGES if s in recipe.stages}
    ops = Workspace(tiny_recipe(tmp_path, "pretrain.log_every=1", "sft.max_steps=99", "corpus.dropped_samples=9"))
    assert {s: ops.fingerprint(s) for s in base} == base
    changed = Workspace(tiny_recipe(tmp_path, "corpus.dedup.seed=7"))
    assert changed.fingerprint("corpus") != base["corpus"] and changed.fingerprint("tokenizer") == base["tokenizer"]


def test_fingerprint_holds_samples_per_step_not_the_allocation(tmp_path):
    """A shared cluster rarely gives the same allocation twice: 2 ranks x 1 accumulation and 1 rank x 2 make the
    same optimizer step (the checkpoint is resharded on resume), so the stage is not redone; a step of other size is."""
    from kamado.stage import result_config

    base = Workspace(tiny_recipe(tmp_path, "pretrain.nproc_per_node=2", "pretrain.grad_accum=1"))
    same = Workspace(tiny_recipe(tmp_path, "pretrain.nproc_per_node=1", "pretrain.grad_accum=2"))
    more_nodes = Workspace(tiny_recipe(tmp_path, "pretrain.nodes=2", "pretrain.nproc_per_node=1", "pretrain.grad_accum=1"))
    bigger = Workspace(tiny_recipe(tmp_path, "pretrain.nproc_per_node=1", "pretrain.grad_accum=4"))
    cfg = result_config(base.recipe.pretrain)
    assert cfg["samples_per_step"] == 2 * base.recipe.pretrain.micro_batch_size and "nproc_per_node" not in cfg
    assert same.fingerprint("pretrain") == base.fingerprint("pretrain") == more_nodes.fingerprint("pretrain")
    assert bigger.fingerprint("pretrain") != base.fingerprint("pretrain")


@pytest.mark.parametrize("stage,key,suffix", [
    ("corpus", "corpus.dedup.decontam_paths=[{}]", ".jsonl"),
    ("corpus", "corpus.rules.ng_word_files=[{}]", ".txt"),
    ("tokenizer", "tokenizer.extend_from={}", ".model"),
    ("dpo", "dpo.data=[{}]", ".jsonl"),
    ("release", "eval.tasks=[{{name: jnli, path: {}}}]", ".json"),
])
def test_an_edited_input_file_changes_its_stages_fingerprint_only(tmp_path, stage, key, suffix):
    f = tmp_path / f"input{suffix}"
    f.write_text('{"text": "一行目"}\n', encoding="utf-8")
    recipe = tiny_recipe(tmp_path, key.format(f))
    ws = Workspace(recipe)
    before = {s: ws.fingerprint(s) for s in recipe.stages}
    f.write_text('{"text": "二行目"}\n', encoding="utf-8")  # same size, other content
    after = {s: ws.fingerprint(s) for s in recipe.stages}
    assert [s for s in recipe.stages if before[s] != after[s]] == [stage]
