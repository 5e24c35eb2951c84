"""A release loads across the ecosystem: transformers 4.5x (what vLLM and lm-eval pin) reads the same tokenizer,
chat template, context length and weights as transformers 5."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.release.conftest import make_untrained_release_recipe

TEXTS = ["日本の首都は東京です。", "春になると 桜が咲く。\n二行目 abc  123", "ｶﾀｶﾅと😀絵文字"]
TF4 = {"transformers": "4.57.1", "tokenizers": "0.22.1", "huggingface_hub": "0.36.0"}
# transformers 4.x imports these through huggingface_hub; installed next to it so the venv stays untouched
TF4_EXTRA = ["requests", "urllib3", "idna", "charset_normalizer", "certifi"]
LOADER = Path(__file__).with_name("load_with_transformers.py")


@pytest.fixture(scope="module")
def release_dir(tok_recipe, random_model_dir, tmp_path_factory):
    from kamado.local import run_stages
    from kamado.stage import Workspace

    recipe = make_untrained_release_recipe(tok_recipe, random_model_dir, tmp_path_factory.mktemp("portable"))
    run_stages(recipe, ["release"], log=lambda _: None)
    return Workspace(recipe).stage_dir("release") / recipe.release.model_name


def _load(folder: Path, pythonpath: str | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath  # the old transformers shadows the venv's; torch stays the venv's
    proc = subprocess.run([sys.executable, str(LOADER), str(folder), json.dumps(TEXTS)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_release_configs_are_portable(release_dir):
    tok_cfg = json.loads((release_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not isinstance(tok_cfg.get("extra_special_tokens", {}), list)
    assert all(isinstance(tok_cfg[k], str) for k in ("bos_token", "eos_token", "pad_token", "unk_token"))
    assert tok_cfg["model_max_length"] == 512 and "chat_template" in tok_cfg and "### 応答" in tok_cfg["chat_template"]
    cfg = json.loads((release_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32"
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"] and cfg["rope_scaling"] is None
    assert cfg["max_position_embeddings"] == 512


def _transformers4() -> str:
    """transformers 4.x installed once into a cache folder (pip --target, no dependencies: torch is the venv's)."""
    target = Path(os.environ.get("KAMADO_TEST_CACHE", Path.home() / ".cache" / "kamado-tests")) / f"transformers-{TF4['transformers']}"
    if not (target / "transformers" / "__init__.py").is_file():
        pins = [f"{k}=={v}" for k, v in TF4.items()] + TF4_EXTRA
        start = time.time()
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *pins],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"cannot install transformers {TF4['transformers']} (no package index?): {proc.stderr[-500:]}")
        print(f"installed transformers {TF4['transformers']} in {time.time() - start:.0f}s")
    return str(target)


@pytest.mark.slow  # a pip install on the first run (~10-20 s), then two interpreters loading torch (~15 s)
def test_release_loads_the_same_in_transformers_4_and_5(release_dir):
    old, new = _load(release_dir, _transformers4()), _load(release_dir)
    assert old["transformers"].startswith("4.") and new["transformers"].startswith("5.")
    assert old["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert old["ids"] == new["ids"] and all(i[0] == 1 for i in old["ids"])  # BOS first in both
    assert old["decoded"] == new["decoded"] == TEXTS
    assert old["special"] == new["special"] == ["<s>", "</s>", "<pad>", "<unk>"]
    assert old["model_max_length"] == new["model_max_length"] == 512
    assert old["rope_theta"] == new["rope_theta"]
    assert old["chat"] == new["chat"] and old["chat"].endswith("### 応答:\n")
    import torch

    for a, b in zip(old["logits"], new["logits"]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=1e-5)
