"""`kamado plan`: what a GPU budget buys (model size, tokens, days) by the compute-optimal rule; see budget.py."""

from kamado.plan.budget import (CHINCHILLA_TOKENS_PER_PARAM, GPU_PEAK_TFLOPS, Plan, chinchilla_optimal, compute_budget,
                                format_plan, llama_parameters, make_plan, plan_dict, training_days)

__all__ = ["CHINCHILLA_TOKENS_PER_PARAM", "GPU_PEAK_TFLOPS", "Plan", "chinchilla_optimal", "compute_budget", "format_plan",
           "llama_parameters", "make_plan", "plan_dict", "training_days"]
