"""The model card: README.md with Hugging Face metadata, filled from the run's own files (never placeholders).

Every number comes from a file the run wrote: corpus/report.json, tokenizer/eval.json, <stage>/result.json and
<stage>/metrics.jsonl, the release's verification and evaluation. Those files grow new fields as other parts of
kamado improve, so they are read defensively: a section shows what its file holds and says when it is absent.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from kamado.pipeline import current
from kamado.recipe import Recipe
from kamado.stage import Workspace


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a stop: the others still count
    return rows


def _n(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return "–" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"
    return str(x)


def _f(x) -> str:
    return "–" if x is None else f"{x:.4f}"


# Which rule setting each drop reason of the corpus report is governed by (kamado.corpus.filters' names).
RULE_OF_REASON = {"too_short": "min_chars", "too_long": "max_chars", "low_japanese_fraction": "min_japanese_fraction",
                  "low_hiragana_fraction": "min_hiragana_fraction"}


def _threshold(reason: str, rules: dict, filters: dict) -> str:
    if reason in filters:  # a report that lists its filters with their parameters says it best
        f = filters[reason]
        params = f.get("params", f.get("threshold", f))
        if isinstance(params, dict):
            return ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("name", "dropped", "count"))
        return str(params)
    if reason in RULE_OF_REASON and RULE_OF_REASON[reason] in rules:
        key = RULE_OF_REASON[reason]
        return f"{key}={rules[key]}"
    if reason == "exact_duplicate":
        return "identical text after normalization"
    hits = [f"{k}={v}" for k, v in rules.items() if reason.split("_")[-1] in k]
    return ", ".join(hits) or "see rule settings"


def _corpus_section(recipe: Recipe, corpus: dict) -> list[str]:
    if not corpus:
        return ["## Training data", "", "No corpus report (corpus/report.json) in this run.", ""]
    licences = {s.name: getattr(s, "license", None) for s in recipe.corpus.sources}
    lines = ["## Training data / 学習データ", "", "| source | licence | documents read | documents kept |", "|---|---|---|---|"]
    per_source = corpus.get("per_source", {})
    for src in corpus.get("sources", []) or [{"name": n} for n in per_source]:
        name = src.get("name", "?")
        lic = src.get("license") or licences.get(name) or "not stated in the recipe"
        v = per_source.get(name, {})
        lines.append(f"| {name} | {lic} | {_n(v.get('docs_in'))} | {_n(v.get('kept', v.get('docs_kept')))} |")
    docs_in = corpus.get("docs_in")
    lines += ["", f"Documents read {_n(docs_in)}, kept {_n(corpus.get('docs_kept'))}, dropped {_n(corpus.get('docs_dropped'))}; "
              f"characters {_n(corpus.get('chars_in'))} in, {_n(corpus.get('chars_out'))} kept.", ""]
    dropped = corpus.get("dropped", {})
    rules = corpus.get("rules", {})
    filters = {f.get("name"): f for f in corpus.get("filters", []) if isinstance(f, dict)} if isinstance(corpus.get("filters"), list) else {}
    if dropped:
        lines += ["| filter | threshold | documents dropped | share of documents read |", "|---|---|---|---|"]
        for reason, n in dropped.items():
            share = f"{n / docs_in:.2%}" if isinstance(n, (int, float)) and docs_in else "–"
            lines.append(f"| {reason} | {_threshold(reason, rules, filters)} | {_n(n)} | {share} |")
        lines.append("")
    dups = {r: n for r, n in dropped.items() if "dup" in r}
    if dups and docs_in:
        lines.append("Deduplication: " + "; ".join(f"{r} removed {_n(n)} of {_n(docs_in)} documents ({n / docs_in:.2%})"
                                                   for r, n in dups.items()) + ".")
    for key in ("dedup", "near_dedup", "minhash"):
        if isinstance(corpus.get(key), dict):
            lines.append(f"{key}: " + ", ".join(f"{k} {_n(v)}" for k, v in corpus[key].items() if not isinstance(v, (dict, list))) + ".")
    if rules:
        lines += ["", "Rule settings: " + ", ".join(f"`{k}={v}`" for k, v in rules.items()) + "."]
    if corpus.get("pii_masked"):
        lines += ["", "Personal information masked: " + ", ".join(f"{k} {_n(v)}" for k, v in corpus["pii_masked"].items()) + "."]
    return lines + [""]


def _compute(result: dict, rows: list[dict], n_params: int) -> dict:
    device = result.get("device")
    if not device:  # result.json does not say; the metrics do when they hold GPU memory or MFU
        device = "GPU" if any(r.get("mem_allocated_mb") is not None or r.get("mfu") is not None for r in rows) else "CPU"
    device = "GPU" if str(device).lower().startswith(("cuda", "gpu")) else "CPU" if str(device).lower().startswith("cpu") else str(device)
    seconds, world = result.get("seconds"), result.get("world_size")
    hours = seconds * world / 3600 if isinstance(seconds, (int, float)) and isinstance(world, int) else None
    tokens = result.get("tokens_trained") or 0
    return {"device": device, "hours": hours, "flops": 6.0 * (result.get("parameters") or n_params) * tokens,
            "tokens": tokens}


def _training_section(recipe: Recipe, ws: Workspace, stages: list[str], n_params: int) -> tuple[list[str], dict]:
    results = {s: _read(ws.stage_dir(s) / "result.json") for s in stages}
    metrics = {s: _metrics(ws.stage_dir(s) / "metrics.jsonl") for s in stages}
    compute = {s: _compute(results[s], metrics[s], n_params) for s in stages}
    lines = ["## Training / 学習", "",
             "| stage | steps | tokens | first loss | last loss | validation loss | ranks | ZeRO | precision | wall seconds | median tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in stages:
        r = results[s]
        tps = [m["tokens_per_s"] for m in metrics[s] if isinstance(m.get("tokens_per_s"), (int, float))]
        lines.append(f"| {s} | {_n(r.get('steps'))} | {_n(r.get('tokens_trained'))} | {_f(r.get('first_loss'))} | {_f(r.get('last_loss'))} "
                     f"| {_f(r.get('val_loss'))} | {_n(r.get('world_size'))} | {_n(r.get('zero_stage'))} | {_n(r.get('precision'))} "
                     f"| {_n(r.get('seconds'))} | {_n(statistics.median(tps)) if tps else '–'} |")
    lines += ["", "Hyperparameters:", ""]
    for s in stages:
        c = recipe.stage_config(s)
        extra = f", DPO β {c.beta}" if s == "dpo" else ""
        data = f", data {', '.join(Path(p).name for p in c.data)}" if s in ("sft", "dpo") and c.data else ""
        lines.append(f"- {s}: lr {c.lr}, warmup {c.warmup_steps} steps, {getattr(c, 'schedule', 'cosine')} decay to "
                     f"{c.min_lr_ratio}×, weight decay {c.weight_decay}, grad clip {c.grad_clip}, micro-batch {c.micro_batch_size} × "
                     f"accumulation {c.grad_accum} × {c.nodes * c.nproc_per_node} ranks, sequence {c.seq_len}, seed {c.seed}{extra}{data}")
    fine = [s for s in stages if s != "pretrain"]
    if fine:
        lines += ["", "Fine-tuning stages: " + "; ".join(
            f"{s} on {_n(results[s].get('train_records', results[s].get('pairs')))} records"
            + (f" (rejected: {results[s]['rejected']})" if results[s].get("rejected") else "") for s in fine) + "."]
    lines += ["", "### Compute / 計算量", "", "| stage | tokens | device-hours (wall seconds × ranks) | FLOPs ≈ 6·N·tokens |", "|---|---|---|---|"]
    for s in stages:
        c = compute[s]
        hours = f"{c['hours']:.4g} {c['device']}-hours" if c["hours"] is not None else "–"
        lines.append(f"| {s} | {_n(c['tokens'])} | {hours} | {c['flops']:.3e} |")
    total_flops = sum(c["flops"] for c in compute.values())
    by_device: dict[str, float] = {}
    for c in compute.values():
        if c["hours"] is not None:
            by_device[c["device"]] = by_device.get(c["device"], 0.0) + c["hours"]
    lines.append(f"| total | {_n(sum(c['tokens'] for c in compute.values()))} | "
                 f"{', '.join(f'{h:.4g} {d}-hours' for d, h in by_device.items()) or '–'} | {total_flops:.3e} |")
    lines += ["", "Hours include start-up, checkpointing and evaluation; N is the parameter count above.", ""]
    return lines, {"flops": total_flops, "hours": by_device}


def write_model_card(recipe: Recipe, ws: Workspace, out: Path, trained_by: str, verification: dict, model,
                     eval_results: dict | None = None, contamination: dict | None = None) -> Path:
    rel = recipe.release
    corpus = _read(ws.stage_dir("corpus") / "report.json")
    tok = _read(ws.stage_dir("tokenizer") / "eval.json")
    stages = [s for s in recipe.stages if s in current().policy]
    stages = stages[: stages.index(trained_by) + 1] if trained_by in stages else stages
    n_params = sum(p.numel() for p in model.parameters())
    c = model.config
    base = rel.base_model or (Path(recipe.pretrain.model.init_from).name if getattr(recipe.pretrain.model, "init_from", None) else None)
    meta: dict[str, Any] = {
        "language": ["ja"], "license": rel.license, "library_name": "transformers", "pipeline_tag": "text-generation",
        "tags": ["kamado", "llama", "japanese"] + [s for s in stages if s != "pretrain"],
        "datasets": [s.get("name") for s in corpus.get("sources", []) if s.get("name")] or [s.name for s in recipe.corpus.sources],
    }
    if base:
        meta["base_model"] = base
    lines = ["---", yaml.safe_dump(meta, allow_unicode=True, sort_keys=False).strip(), "---", "",
             f"# {rel.model_name}", "",
             f"A Llama-architecture Japanese language model built with kamado from recipe `{recipe.name}`, "
             f"{'fine-tuned from ' + base if base else 'trained from scratch'} through the stages {' → '.join(stages)}.",
             f"kamado でレシピ `{recipe.name}` から構築した日本語 Llama 系言語モデルです（{' → '.join(stages)}）。", "",
             f"Weights: {verification.get('source', trained_by)}.", ""]

    lines += ["## Model / モデル", "", "| | |", "|---|---|",
              f"| parameters | {n_params:,} |", f"| layers | {c.num_hidden_layers} |", f"| hidden size | {c.hidden_size} |",
              f"| MLP size | {c.intermediate_size} |",
              f"| attention heads (key/value heads) | {c.num_attention_heads} ({c.num_key_value_heads}) |",
              f"| vocabulary | {c.vocab_size:,} |", f"| context length | {c.max_position_embeddings} |",
              f"| weights | {rel.dtype}, safetensors |", ""]
    lines += _corpus_section(recipe, corpus)
    if tok:
        lines += ["## Tokenizer / トークナイザ", "",
                  f"SentencePiece {recipe.tokenizer.model_type}, vocabulary {_n(tok.get('vocab_size'))}, byte fallback "
                  f"{recipe.tokenizer.byte_fallback}. On {_n(tok.get('eval_texts'))} held-back documents: "
                  f"{_n(tok.get('chars_per_token'))} characters/token, {_n(tok.get('bytes_per_token'))} bytes/token, "
                  f"byte-fallback rate {_n(tok.get('byte_fallback_rate'))}, round trip {tok.get('round_trip', '–')}, "
                  f"HF vs SentencePiece id mismatches {tok.get('hf_id_mismatches', '–')}.", ""]
    if stages:
        section, _ = _training_section(recipe, ws, stages, n_params)
        lines += section

    lines += evaluation_section(eval_results, contamination)

    lines += ["## Verification / 検証", "",
              f"Loaded offline with `AutoModelForCausalLM` and `AutoTokenizer`. On {verification['prompts']} fixed prompts: "
              f"tokenizer ids identical to SentencePiece; max |logit difference| against the consolidated weights "
              f"{verification['max_abs_logit_diff_vs_consolidated']:.3g}"
              + (f", against the training model {verification['max_abs_logit_diff']:.3g} (tolerance {verification['training_tolerance']})."
                 if verification.get("max_abs_logit_diff") is not None else f" ({verification['training_reference']})."), "",
              "Greedy samples:", ""]
    lines += [f"- 「{s['prompt']}」→「{s['completion']}」" for s in verification["samples"]]
    lines += ["", "## Limitations / 制約", "",
              "- Hallucination: like every language model it is prone to hallucination, stating false things fluently. Do not rely on its output without checking it.",
              "- Bias: it reflects the biases and the narrow range of its training text (sources above).",
              "- Personal information: rule-based masking (e-mail, phone, postal codes) misses names and other identifiers; "
              "the model may reproduce personal information present in its training text.",
              f"- Size: {n_params:,} parameters and {_n(sum(_read(ws.stage_dir(s) / 'result.json').get('tokens_trained') or 0 for s in stages))} "
              "training tokens; benchmark numbers above are those of this checkpoint only.", "",
              "- 幻覚：事実と異なる内容をもっともらしく生成することがあります。出力は必ず確認してから利用してください。",
              "- 偏り：学習データ（上記）の偏りと範囲の狭さを反映します。",
              "- 個人情報：規則に基づくマスキング（メール・電話番号・郵便番号）では氏名などを除去しきれず、学習データ中の個人情報を再現する可能性があります。", "",
              "## How to use / 使い方", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'tok = AutoTokenizer.from_pretrained("{rel.model_name}")',
              f'model = AutoModelForCausalLM.from_pretrained("{rel.model_name}")',
              'ids = tok("日本の首都は", return_tensors="pt").input_ids',
              "print(tok.decode(model.generate(ids, max_new_tokens=32)[0]))", "```", ""]
    if (out / "chat_template.jinja").is_file() or "chat_template" in _read(out / "tokenizer_config.json"):
        lines += ["The tokenizer's chat template is the instruction format used in fine-tuning: "
                  "`tok.apply_chat_template([{\"role\": \"user\", \"content\": ...}], tokenize=False)`.", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


EVALUATION_HEADING = "## Evaluation / 評価"


def evaluation_section(eval_results: dict | None, contamination: dict | None = None, note: str = "") -> list[str]:
    """The card's evaluation section: the results table, how each task was prompted, the contamination check."""
    lines = [EVALUATION_HEADING, ""]
    if not eval_results:
        return lines + ["Not evaluated in this run (eval.enabled is false or eval.tasks is empty).", ""]
    from kamado.eval.report import format_methods, format_table

    methods = format_methods(eval_results)
    lines += ([note, ""] if note else []) + [format_table(eval_results), ""]
    lines += ["How each task was prompted and scored:", "", methods, ""] if methods else []
    if contamination:
        from kamado.eval.contamination import format_contamination

        trained_on = ", ".join(f"{name} ({_n(s['documents'])} texts)" for name, s in contamination.get(
            "sources", {"corpus": {"documents": contamination.get("corpus_documents")}}).items())
        lines += [f"Contamination check against the training data: {trained_on}; "
                  f"character {contamination['ngram_chars']}-grams after NFKC, whitespace removed:", "",
                  format_contamination(contamination), ""]
    return lines


def rewrite_evaluation(card: Path, eval_results: dict, note: str = "") -> Path:
    """Replace the evaluation section of a model card written by `write_model_card` (everything from its heading
    to the next `## ` heading) with `eval_results`; the rest of the card stays as it was. Durable (temp, fsync,
    rename): a release's card is never left half-written."""
    from kamado.durable import write_text_durable

    lines = card.read_text(encoding="utf-8").split("\n")
    if EVALUATION_HEADING not in lines:
        raise ValueError(f"{card}: no '{EVALUATION_HEADING}' section to rewrite (not a card kamado wrote)")
    start = lines.index(EVALUATION_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    write_text_durable(card, "\n".join(lines[:start] + evaluation_section(eval_results, note=note) + lines[end:]))
    return card
