"""Shared pytest configuration for kamado. Keep this file small; add fixtures below the existing ones."""
from __future__ import annotations

import os

import pytest

from tests.slurm_cluster import LocalSlurmCluster, SlurmUnavailable


def pytest_configure(config):
    for name, desc in (
        ("slurm", "needs a real local Slurm cluster (slurm-wlm + munge, root); uses the slurm_cluster fixture"),
        ("distributed", "starts several processes (torch.distributed / DeepSpeed ranks)"),
        ("gpu", "needs a CUDA GPU; skipped elsewhere"),
        ("slow", "takes more than a few seconds"),
    ):
        config.addinivalue_line("markers", f"{name}: {desc}")


def pytest_collection_modifyitems(config, items):
    """A test that uses the real Slurm cluster is a `slurm` test whether or not its file says so, so the fast tier
    (`-m "not slow and not slurm"`) never starts daemons."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One real Slurm cluster (nodes n1, n2; partition debug) for the whole session; SLURM_CONF points to it.

    Skipped when slurmctld/munged are missing, unless KAMADO_REQUIRE_SLURM=1 (set in CI), which makes it fail.
    """
    cluster = LocalSlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as e:
        if os.environ.get("KAMADO_REQUIRE_SLURM") == "1":
            pytest.fail(f"KAMADO_REQUIRE_SLURM=1 but no local Slurm cluster can run: {e}")
        pytest.skip(f"no local Slurm cluster: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf_path)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The demo recipe run once end to end (corpus → … → release) with training steps cut down; returns the recipe.

    Real parts throughout: SentencePiece, transformers, DeepSpeed ZeRO-2 on 2 CPU ranks (gloo).
    """
    from kamado.cli import main
    from tests.helpers import ROOT, tiny_recipe

    tmp = tmp_path_factory.mktemp("tiny")
    overrides = [f"workdir={tmp / 'run'}", "pretrain.max_steps=40", "pretrain.checkpoint_every=20", "pretrain.log_every=10",
                 "sft.max_steps=16", "dpo.max_steps=10"]
    args = ["run", str(ROOT / "recipes" / "tiny-cpu.yaml")]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0, "the tiny pipeline failed; see the captured output"
    return tiny_recipe(tmp, *overrides[1:])


# The eval, release and reliability tests share these two: a real corpus + tokenizer run (seconds), and a tiny
# random Llama saved with that tokenizer (no training: those tests check counting and scoring, not quality).
@pytest.fixture(scope="session")
def tok_recipe(tmp_path_factory):
    """The demo recipe run through corpus and tokenizer only (real SentencePiece, ~5 s)."""
    from kamado.local import run_stages

    from tests.helpers import tiny_recipe

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
