"""Fixtures for the release/eval tests: a real corpus + tokenizer run (seconds), and a tiny random Llama saved
with that tokenizer (no training: the eval tests check counting and scoring, not quality)."""

from __future__ import annotations

import pytest

from tests.helpers import tiny_recipe


@pytest.fixture(scope="session")
def tok_recipe(tmp_path_factory):
    """The demo recipe run through corpus and tokenizer only (real SentencePiece, ~5 s)."""
    from kamado.stage import run_stages

    recipe = tiny_recipe(tmp_path_factory.mktemp("tok"))
    run_stages(recipe, ["corpus", "tokenizer"], log=lambda _: None)
    return recipe


@pytest.fixture(scope="session")
def random_model_dir(tok_recipe, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer

    from kamado.stage import Workspace
    from kamado.train.model import PRESETS, build_model, llama_config

    ws = Workspace(tok_recipe)
    tok = AutoTokenizer.from_pretrained(str(ws.tokenizer_dir()), local_files_only=True)
    torch.manual_seed(0)
    model = build_model(llama_config(PRESETS["tiny"], len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)).eval()
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


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
