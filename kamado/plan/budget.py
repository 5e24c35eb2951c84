"""`kamado plan`: what a GPU budget buys, by the compute-optimal rule of Hoffmann et al. 2022 (Chinchilla).

    C = GPUs × peak FLOP/s × MFU × seconds         training compute the budget delivers
    C ≈ 6·N·D                                      FLOPs of training N parameters on D tokens (Kaplan et al. 2020)
    D ≈ 20·N  ⇒  N = √(C / 120),  D = 20·N          Chinchilla's compute-optimal tokens per parameter

6·N·D counts the weight matmuls only (attention scores add 12·L·d·s per token, a few percent at these sizes).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Dense bf16 peak TFLOP/s per accelerator, vendor datasheets without sparsity (V100: fp16 tensor cores).
GPU_PEAK_TFLOPS = {
    "h100": 989.0, "h200": 989.0, "gh200": 989.0, "b200": 2250.0, "a100": 312.0, "a100-40g": 312.0,
    "l40s": 362.0, "a6000": 155.0, "v100": 125.0, "mi250x": 383.0, "mi300x": 1307.0,
}
SECONDS_PER_DAY = 86_400
CHINCHILLA_TOKENS_PER_PARAM = 20.0


def compute_budget(gpus: int, peak_tflops: float, mfu: float, days: float) -> float:
    return gpus * peak_tflops * 1e12 * mfu * days * SECONDS_PER_DAY


def chinchilla_optimal(compute: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> tuple[float, float]:
    """(N, D) with C = 6·N·D and D = r·N."""
    n = math.sqrt(compute / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


def training_days(n_params: float, tokens: float, gpus: int, peak_tflops: float, mfu: float) -> float:
    return 6.0 * n_params * tokens / (gpus * peak_tflops * 1e12 * mfu) / SECONDS_PER_DAY


def llama_parameters(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
                     tied: bool = False) -> int:
    """Parameters of a Llama model (untied embeddings, no biases): matches transformers' LlamaForCausalLM."""
    head_dim = hidden // heads
    attention = hidden * hidden * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    mlp = 3 * hidden * intermediate  # gate, up, down
    per_layer = attention + mlp + 2 * hidden  # two RMSNorms
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


@dataclass
class Plan:
    gpus: int
    gpu: str
    days: float
    mfu: float
    peak_tflops: float
    compute_flops: float
    optimal_parameters: float
    optimal_tokens: float
    vocab_size: int
    presets: list[dict] = field(default_factory=list)  # every preset: params, optimal tokens, days for them
    closest_preset: str = ""
    corpus: dict = field(default_factory=dict)
    recipe_model: dict = field(default_factory=dict)


def _corpus_tokens(workdir: Path) -> dict:
    """Tokens the run's corpus holds: exact from the token shards' index, else chars ÷ chars-per-token."""
    index = workdir / "tokenizer" / "tokens" / "index.json"
    if index.is_file():
        shards = json.loads(index.read_text()).get("shards", [])
        return {"tokens": sum(s.get("tokens", 0) for s in shards if s.get("split") == "train"), "how": f"counted in {index}"}
    report = workdir / "corpus" / "report.json"
    if report.is_file():
        chars = json.loads(report.read_text()).get("chars_out")
        ev = workdir / "tokenizer" / "eval.json"
        cpt = json.loads(ev.read_text()).get("chars_per_token") if ev.is_file() else None
        if chars:
            cpt_used = cpt or 1.5  # typical of a Japanese SentencePiece vocabulary of 32-100k pieces
            return {"tokens": int(chars / cpt_used), "how": f"{chars:,} characters in {report} ÷ {cpt_used} chars/token"
                    + ("" if cpt else " (assumed; no tokenizer/eval.json yet)")}
    return {}


def make_plan(gpus: int, gpu: str, days: float, mfu: float = 0.4, recipe=None,
              tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> Plan:
    from kamado.train.model import PRESETS, resolve_shape

    key = gpu.lower()
    if key not in GPU_PEAK_TFLOPS:
        raise ValueError(f"--gpu: unknown accelerator {gpu!r} (known: {', '.join(GPU_PEAK_TFLOPS)})")
    if gpus < 1 or days <= 0 or not 0 < mfu <= 1:
        raise ValueError("--gpus must be >= 1, --days > 0 and --mfu in (0, 1]")
    peak = GPU_PEAK_TFLOPS[key]
    c = compute_budget(gpus, peak, mfu, days)
    n, d = chinchilla_optimal(c, tokens_per_param)
    vocab = recipe.tokenizer.vocab_size if recipe is not None else 32_000
    plan = Plan(gpus, key, days, mfu, peak, c, n, d, vocab)
    for name, s in PRESETS.items():
        p = llama_parameters(s.hidden_size, s.intermediate_size, s.num_layers, s.num_heads, s.num_kv_heads, vocab)
        plan.presets.append({"preset": name, "parameters": p, "optimal_tokens": tokens_per_param * p,
                             "days_for_optimal_tokens": training_days(p, tokens_per_param * p, gpus, peak, mfu),
                             "tokens_in_budget": c / (6.0 * p)})
    plan.closest_preset = min(plan.presets, key=lambda r: abs(math.log(r["parameters"] / n)))["preset"]
    if recipe is not None:
        plan.corpus = _corpus_tokens(Path(recipe.workdir))
        if plan.corpus:
            plan.corpus["enough_for_optimal"] = plan.corpus["tokens"] >= d
            plan.corpus["epochs_needed"] = d / max(plan.corpus["tokens"], 1)
        cfg = recipe.pretrain
        s = resolve_shape(cfg.model)
        p = llama_parameters(s.hidden_size, s.intermediate_size, s.num_layers, s.num_heads, s.num_kv_heads, vocab)
        ranks = cfg.nodes * cfg.nproc_per_node
        tokens = cfg.max_steps * cfg.micro_batch_size * cfg.grad_accum * cfg.seq_len * ranks
        plan.recipe_model = {"preset": cfg.model.preset, "parameters": p, "planned_tokens": tokens,
                             "days": training_days(p, tokens, gpus, peak, mfu)}
    return plan


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(plan: Plan) -> str:
    lines = [f"budget: {plan.gpus} × {plan.gpu} ({plan.peak_tflops:g} TFLOP/s bf16 dense) × {plan.days:g} days × MFU {plan.mfu:g}",
             f"compute C = {plan.compute_flops:.3e} FLOPs",
             f"Chinchilla-optimal (D ≈ 20·N, C = 6·N·D): N = {_si(plan.optimal_parameters)} parameters, "
             f"D = {_si(plan.optimal_tokens)} tokens",
             "", f"{'preset':<8} {'params':>9} {'20·N tokens':>12} {'days for them':>14} {'tokens in budget':>17}"]
    for r in plan.presets:
        mark = "  ← closest" if r["preset"] == plan.closest_preset else ""
        lines.append(f"{r['preset']:<8} {_si(r['parameters']):>9} {_si(r['optimal_tokens']):>12} "
                     f"{r['days_for_optimal_tokens']:>14.3g} {_si(r['tokens_in_budget']):>17}{mark}")
    if plan.recipe_model:
        m = plan.recipe_model
        lines += ["", f"recipe's model ({m['preset']}): {_si(m['parameters'])} parameters, {_si(m['planned_tokens'])} tokens "
                  f"planned (max_steps × batch × seq_len × ranks): {m['days']:.3g} days on this budget"]
    if plan.corpus:
        c = plan.corpus
        verdict = "enough" if c["enough_for_optimal"] else f"NOT enough: {c['epochs_needed']:.2g} epochs would be needed"
        lines += [f"corpus: {_si(c['tokens'])} tokens ({c['how']}); for {_si(plan.optimal_tokens)} tokens: {verdict}"]
    elif plan.recipe_model:
        lines += ["corpus: no corpus report in the recipe's workdir yet (run the corpus stage)"]
    return "\n".join(lines)


def plan_dict(plan: Plan) -> dict:
    return asdict(plan)
