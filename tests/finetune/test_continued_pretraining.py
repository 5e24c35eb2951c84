"""recipes/continued-pretraining.yaml: its paths chain onto the demo recipe's run, and it runs (corpus → extended
tokenizer → pretrain from the release, domain + replay mixture, lr re-warmup) from the session's finished demo run."""

import json
import math
import os

import pytest

from kamado.recipe import check_inputs, load_recipe
from kamado.local import run_stages
from kamado.stage import Workspace
from kamado.tokenizer.export import load_hf
from tests.helpers import ROOT

RECIPE = ROOT / "recipes" / "continued-pretraining.yaml"


def test_the_shipped_recipe_starts_from_the_demo_run():
    """Without a demo run on disk its inputs cannot exist yet; what can be checked is that they are the demo's."""
    cpt, demo = load_recipe(RECIPE), load_recipe(ROOT / "recipes" / "tiny-cpu.yaml")
    release = os.path.join(demo.workdir, "release", demo.release.model_name)
    assert cpt.pretrain.model.init_from == release and cpt.tokenizer.extend_from == release
    assert [s.path for s in cpt.pretrain.data] == [os.path.join(cpt.workdir, "tokenizer", "tokens"),
                                                   os.path.join(demo.workdir, "tokenizer", "tokens")]
    assert cpt.pretrain.warmup_steps > 0 and cpt.pretrain.lr < demo.pretrain.lr
    check_inputs(cpt, ["corpus"], str(RECIPE))  # the domain corpus is committed


@pytest.mark.distributed
@pytest.mark.slow
def test_continued_pretraining_runs_from_the_demo_release(tiny_run, tmp_path):
    demo = Workspace(tiny_run)
    release = demo.stage_dir("release") / tiny_run.release.model_name
    own_tokens = tmp_path / "cpt" / "tokenizer" / "tokens"
    recipe = load_recipe(RECIPE, [
        f"workdir={tmp_path / 'cpt'}", f"tokenizer.extend_from={release}", f"pretrain.model.init_from={release}",
        f"pretrain.data=[{{path: {own_tokens}, weight: 0.7}}, {{path: {demo.stage_dir('tokenizer') / 'tokens'}, weight: 0.3}}]",
        "pretrain.max_steps=8", "pretrain.warmup_steps=4", "pretrain.log_every=1", "pretrain.checkpoint_every=1000"])
    check_inputs(recipe, recipe.stages, str(RECIPE))  # the domain tokens are this run's own: not there yet, and fine
    assert run_stages(recipe, ["corpus", "tokenizer", "pretrain"], lambda s: None) == {s: "done" for s in ("corpus", "tokenizer", "pretrain")}
    ws = Workspace(recipe)
    result = json.loads((ws.stage_dir("pretrain") / "result.json").read_text())
    new_vocab, old_vocab = len(load_hf(ws.tokenizer_dir())), len(load_hf(release))
    assert result["init_from"] == str(release) and result["embedding_rows_added"] == new_vocab - old_vocab > 0
    rows = [json.loads(x) for x in (ws.stage_dir("pretrain") / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert len(rows) == 8
    # the lr warms up again (a fresh schedule, not the checkpoint's decayed one): logged after each step's update,
    # step 1 shows the second warmup value, 2/4 of the peak; the peak is reached at step 3 ...
    assert rows[0]["lr"] == pytest.approx(recipe.pretrain.lr / 2) and rows[2]["lr"] == pytest.approx(recipe.pretrain.lr)
    # ... and the model starts as the released one, not from scratch: well below the demo's own first pretraining loss
    demo_rows = [json.loads(x) for x in (demo.stage_dir("pretrain") / "metrics.jsonl").read_text().splitlines()]
    from_scratch = next(r["loss"] for r in demo_rows if "loss" in r)
    assert from_scratch == pytest.approx(math.log(old_vocab), abs=0.3) and rows[0]["loss"] < from_scratch - 1.0
