"""The evaluation results as the model card and the console show them: a table, and how each task was scored."""

from __future__ import annotations

from pathlib import Path


def _label(s: dict) -> str:
    return s["task"] if s["task"] == "perplexity" else f"{s['task']} {s['shots']}-shot"


def _headline(s: dict) -> str:
    if s["task"] == "perplexity":
        return f"perplexity {s['perplexity']:.2f}, {s['bits_per_character']:.3f} bits/char on {s['tokens']:,} tokens"
    if "accuracy" in s:
        return f"accuracy {s['accuracy']:.4f} ({s['correct']}/{s['items']}), chance {s['chance']:.2f}"
    if "pass_at_1" in s:
        return f"pass@1 {s['pass_at_1']:.4f} ({s['passed']}/{s['items']})"
    if "pearson" in s:
        return f"Pearson {s['pearson']:.4f}, Spearman {s['spearman']:.4f} on {s['items']} pairs"
    return f"exact match {s['exact_match']:.4f}, char F1 {s['char_f1']:.4f} on {s['items']} questions"


def format_table(results: dict) -> str:
    lines = ["| task | shots | items | metric | value |", "|---|---|---|---|---|"]
    for s in results["tasks"]:
        if s["task"] == "perplexity":
            lines.append(f"| perplexity ({s['data'] if s['data'].startswith('tokenizer') else Path(s['data']).name}) | – "
                         f"| {s['documents']:,} docs | perplexity / bits per char | {s['perplexity']:.2f} / {s['bits_per_character']:.3f} |")
        elif "accuracy" in s:
            lines.append(f"| {s['task']} | {s['shots']} | {s['items']:,} | accuracy (chance {s['chance']:.2f}) | "
                         f"{s['accuracy']:.4f} |")
        elif "pass_at_1" in s:
            lines.append(f"| {s['task']} | {s['shots']} | {s['items']:,} | pass@1 | {s['pass_at_1']:.4f} |")
        elif "pearson" in s:
            lines.append(f"| {s['task']} | {s['shots']} | {s['items']:,} | Pearson / Spearman | "
                         f"{s['pearson']:.4f} / {s['spearman']:.4f} |")
        else:
            lines.append(f"| {s['task']} | {s['shots']} | {s['items']:,} | exact match / char F1 | "
                         f"{s['exact_match']:.4f} / {s['char_f1']:.4f} |")
    return "\n".join(lines)


def format_methods(results: dict) -> str:
    """How each task was prompted and scored, and where its shots came from: a list for the model card."""
    return "\n".join(f"- {s['task']}: {s['method']}. Prompt `{s['template']!r}`; few-shot: {s['fewshot_source']}."
                     for s in results["tasks"] if s["task"] != "perplexity" and "method" in s)
