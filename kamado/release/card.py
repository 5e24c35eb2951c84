"""The model card: README.md with Hugging Face metadata, filled from the run's own files (never placeholders)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kamado.recipe import Recipe
from kamado.stage import Workspace


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_model_card(recipe: Recipe, ws: Workspace, out: Path, trained_by: str, verification: dict, model) -> Path:
    corpus = _read(ws.stage_dir("corpus") / "report.json")
    tok = _read(ws.stage_dir("tokenizer") / "eval.json")
    training = {s: _read(ws.stage_dir(s) / "result.json") for s in ("pretrain", "sft", "dpo") if s in recipe.stages}
    n_params = sum(p.numel() for p in model.parameters())
    c = model.config
    meta = {
        "language": ["ja"],
        "license": recipe.release.license,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["kamado", "llama", "japanese"],
        "datasets": [s["name"] for s in corpus.get("sources", [])],
    }
    lines = ["---", yaml.safe_dump(meta, allow_unicode=True, sort_keys=False).strip(), "---", "",
             f"# {recipe.release.model_name}", "",
             f"A Llama-architecture Japanese language model built with kamado from recipe `{recipe.name}`.",
             "kamado で構築した日本語 Llama 系言語モデルです。", ""]

    lines += ["## Model", "", "| | |", "|---|---|",
              f"| parameters | {n_params:,} |", f"| layers | {c.num_hidden_layers} |", f"| hidden size | {c.hidden_size} |",
              f"| attention heads (kv) | {c.num_attention_heads} ({c.num_key_value_heads}) |",
              f"| vocabulary | {c.vocab_size:,} |", f"| context length | {c.max_position_embeddings} |",
              f"| weights | {recipe.release.dtype}, safetensors |", ""]

    if corpus:
        lines += ["## Training data", "", "| source | documents read | documents kept |", "|---|---|---|"]
        for name, v in corpus.get("per_source", {}).items():
            lines.append(f"| {name} | {v['docs_in']:,} | {v['kept']:,} |")
        lines += ["", f"Documents read {corpus['docs_in']:,}, kept {corpus['docs_kept']:,}, dropped {corpus['docs_dropped']:,}; "
                  f"characters {corpus['chars_in']:,} in, {corpus['chars_out']:,} out.", "",
                  "| rule | threshold | documents dropped |", "|---|---|---|"]
        rules = corpus.get("rules", {})
        thresholds = {"too_short": f"min_chars={rules.get('min_chars')}", "too_long": f"max_chars={rules.get('max_chars')}",
                      "low_japanese_fraction": f"min_japanese_fraction={rules.get('min_japanese_fraction')}",
                      "low_hiragana_fraction": f"min_hiragana_fraction={rules.get('min_hiragana_fraction')}",
                      "exact_duplicate": "identical text after NFKC"}
        for reason, n in corpus.get("dropped", {}).items():
            lines.append(f"| {reason} | {thresholds.get(reason, '')} | {n:,} |")
        if corpus.get("pii_masked"):
            lines += ["", "Personal information masked: " + ", ".join(f"{k} {v:,}" for k, v in corpus["pii_masked"].items()) + "."]
        lines.append("")

    if tok:
        lines += ["## Tokenizer", "",
                  f"SentencePiece {recipe.tokenizer.model_type}, vocabulary {tok['vocab_size']:,}, byte fallback "
                  f"{recipe.tokenizer.byte_fallback}; on {tok['eval_texts']} held-back documents: {tok['chars_per_token']} characters/token, "
                  f"round trip {tok['round_trip']}, HF vs SentencePiece id mismatches {tok['hf_id_mismatches']}.", ""]

    if training:
        lines += ["## Training", "", "| stage | steps | tokens | first loss | last loss | validation loss | ranks | ZeRO | precision | seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for stage, r in training.items():
            lines.append(f"| {stage} | {r.get('steps')} | {r.get('tokens_trained', 0):,} | {_f(r.get('first_loss'))} | {_f(r.get('last_loss'))} "
                         f"| {_f(r.get('val_loss'))} | {r.get('world_size')} | {r.get('zero_stage')} | {r.get('precision')} | {r.get('seconds')} |")
        lines += ["", "Hyperparameters:", ""]
        for stage in training:
            cfg = recipe.stage_config(stage)
            lines.append(f"- {stage}: lr {cfg.lr}, warmup {cfg.warmup_steps}, cosine to {cfg.min_lr_ratio}×, weight decay {cfg.weight_decay}, "
                         f"micro-batch {cfg.micro_batch_size} × accumulation {cfg.grad_accum} × ranks, sequence {cfg.seq_len}"
                         + (f", DPO β {cfg.beta}" if stage == "dpo" else ""))
        lines.append("")

    lines += ["## Verification", "",
              f"Loaded offline with `AutoModelForCausalLM`; max |logit difference| against the training model on "
              f"{len(verification['samples'])} prompts: {verification['max_abs_logit_diff']:.3g} (tolerance {verification['tolerance']}).", "",
              "Greedy samples:", ""]
    for s in verification["samples"]:
        lines.append(f"- 「{s['prompt']}」→「{s['completion']}」")
    lines += ["", "## Limitations / 制約", "",
              "This model can state false things fluently (hallucination), reflects biases of its training text, and may reproduce "
              "personal information that the masking rules missed. Do not use its output without checking it.",
              "本モデルは事実と異なる内容をもっともらしく生成することがあり（幻覚）、学習データの偏りを反映し、"
              "マスキング規則で除去しきれなかった個人情報を再現する可能性があります。出力は必ず確認してから利用してください。", "",
              "## How to use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'tok = AutoTokenizer.from_pretrained("{recipe.release.model_name}")',
              f'model = AutoModelForCausalLM.from_pretrained("{recipe.release.model_name}")',
              'ids = tok("日本の首都は", return_tensors="pt").input_ids',
              "print(tok.decode(model.generate(ids, max_new_tokens=32)[0]))", "```", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _f(x) -> str:
    return "–" if x is None else f"{x:.4f}"
