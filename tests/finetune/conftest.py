"""Fixtures for the fine-tuning tests: a real SentencePiece/HF tokenizer trained on the committed sample (session
scope: built once), and a random tiny Llama on it (no training needed for the unit tests)."""

import pytest


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from kamado.local import run_stages
    from kamado.stage import Workspace
    from kamado.tokenizer.export import load_hf
    from tests.helpers import tiny_recipe

    recipe = tiny_recipe(tmp_path_factory.mktemp("ft-tok"))
    run_stages(recipe, ["corpus", "tokenizer"], lambda s: None)
    return load_hf(Workspace(recipe).tokenizer_dir())


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    import torch

    from kamado.train.model import PRESETS, build_model, llama_config

    torch.manual_seed(0)
    cfg = llama_config(PRESETS["tiny"], len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return build_model(cfg).eval()
