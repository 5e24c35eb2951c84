"""`kamado plan`: numbers checked against the formulas and against published model sizes."""

from __future__ import annotations

import json
import math

import pytest

from kamado.plan import (GPU_PEAK_TFLOPS, chinchilla_optimal, compute_budget, llama_parameters, make_plan,
                                 training_days)
from tests.helpers import ROOT


def test_chinchilla_itself_is_compute_optimal():
    """Chinchilla: 70B parameters on 1.4T tokens. Its compute C = 6·N·D gives back N and D = 20·N."""
    c = 6 * 70e9 * 1.4e12
    n, d = chinchilla_optimal(c)
    assert n == pytest.approx(70e9, rel=1e-9) and d == pytest.approx(1.4e12, rel=1e-9)
    assert 6 * n * d == pytest.approx(c)


def test_budget_of_64_h100_for_14_days():
    plan = make_plan(64, "h100", 14, 0.4)
    c = 64 * 989e12 * 0.4 * 14 * 86_400
    assert plan.compute_flops == pytest.approx(c) == compute_budget(64, 989.0, 0.4, 14)
    assert plan.optimal_parameters == pytest.approx(math.sqrt(c / 120))
    assert plan.optimal_tokens == pytest.approx(20 * math.sqrt(c / 120))
    assert plan.closest_preset == "13b"  # ≈ 16B optimal: 13b is the nearest preset in log scale
    for row in plan.presets:  # the time to train each preset on 20·N tokens, from C = 6·N·D
        assert row["days_for_optimal_tokens"] == pytest.approx(6 * row["parameters"] * 20 * row["parameters"] / (64 * 989e12 * 0.4) / 86_400)
    # the optimum uses the whole budget: training N_opt on D_opt takes exactly the days given
    assert training_days(plan.optimal_parameters, plan.optimal_tokens, 64, 989.0, 0.4) == pytest.approx(14)


def test_llama_parameter_count_matches_published_sizes_and_transformers():
    assert llama_parameters(4096, 11008, 32, 32, 32, 32000) == 6_738_415_616  # Llama-2-7B
    assert llama_parameters(5120, 13824, 40, 40, 40, 32000) == 13_015_864_320  # Llama-2-13B
    from transformers import LlamaConfig, LlamaForCausalLM

    m = LlamaForCausalLM(LlamaConfig(vocab_size=3000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    assert llama_parameters(64, 176, 2, 4, 2, 3000) == sum(p.numel() for p in m.parameters())


def test_plan_command_reads_the_corpus(tok_recipe, capsys):
    from kamado.cli import main

    assert main(["plan", "--gpus", "8", "--gpu", "a100", "--days", "1", "--recipe", str(ROOT / "recipes" / "tiny-cpu.yaml"),
                 "--set", f"workdir={tok_recipe.workdir}", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    index = json.loads((__import__("pathlib").Path(tok_recipe.workdir) / "tokenizer" / "tokens" / "index.json").read_text())
    assert plan["corpus"]["tokens"] == sum(s["tokens"] for s in index["shards"] if s["split"] == "train")
    assert plan["corpus"]["enough_for_optimal"] is False
    assert plan["peak_tflops"] == GPU_PEAK_TFLOPS["a100"] and plan["vocab_size"] == tok_recipe.tokenizer.vocab_size
    assert main(["plan", "--gpus", "8", "--gpu", "tpu9", "--days", "1"]) == 2
