"""Release test helpers: a workdir whose pretrain stage is the random model of tests/conftest.py (`tok_recipe`,
`random_model_dir`), so the release stage runs in seconds."""

from __future__ import annotations

import pytest


def make_untrained_release_recipe(tok_recipe, model_dir, tmp_path, *overrides: str):
    """A workdir whose pretrain stage is done with the random model (no training): the release stage runs on it
    in seconds. Returns the recipe (stages corpus, tokenizer, pretrain, release); nothing released yet."""
    import shutil

    from kamado.stage import StageResult, Workspace
    from tests.helpers import tiny_recipe

    recipe = tiny_recipe(tmp_path, "stages=[corpus,tokenizer,pretrain,release]", *overrides)
    shutil.copytree(tok_recipe.workdir, recipe.workdir)
    ws = Workspace(recipe)
    shutil.copytree(model_dir, ws.stage_dir("pretrain") / "hf")
    ws.mark_done("pretrain", StageResult(counts={}, outputs=["hf"]), 0.0)
    return recipe


@pytest.fixture
def untrained_release_recipe(tok_recipe, random_model_dir, tmp_path):
    return make_untrained_release_recipe(tok_recipe, random_model_dir, tmp_path)
