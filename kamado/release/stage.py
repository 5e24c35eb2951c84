"""The release stage: copy the last training stage's consolidated weights into a `save_pretrained` folder with
tokenizer, generation config and model card, then verify it the way a user would load it: offline
AutoModelForCausalLM / AutoTokenizer, logits compared with the training model's, a greedy sample."""

from __future__ import annotations

import json
import shutil

import torch

from kamado.recipe import Recipe
from kamado.release.card import write_model_card
from kamado.stage import StageResult, Workspace, write_json_atomic


def verify(release_dir, reference: dict, tolerance: float, max_new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(release_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(release_dir), local_files_only=True, dtype=torch.float32).eval()
    max_diff = 0.0
    samples = []
    with torch.no_grad():
        for prompt, ref_logits in zip(reference["prompts"], reference["logits"]):
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids).logits.float()
            if logits.shape != ref_logits.shape:
                raise RuntimeError(f"release: logits shape {tuple(logits.shape)} != training {tuple(ref_logits.shape)} for {prompt!r}")
            max_diff = max(max_diff, (logits - ref_logits).abs().max().item())
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            samples.append({"prompt": prompt, "completion": tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)})
    if max_diff > tolerance:
        raise RuntimeError(f"release: exported logits differ from the training model's by {max_diff:.3g} > {tolerance}")
    return {"max_abs_logit_diff": max_diff, "tolerance": tolerance, "samples": samples}


def run(recipe: Recipe, ws: Workspace) -> StageResult:
    cfg = recipe.release
    source = ws.model_source("release")
    trained_by = source.parent.name
    out = ws.stage_dir("release") / cfg.model_name
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(str(source), local_files_only=True, dtype=torch.float32)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    tok.save_pretrained(out)
    shutil.copy(ws.stage_dir("tokenizer") / "spm.model", out / "tokenizer.model")
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=256).save_pretrained(out)

    reference = torch.load(ws.stage_dir(trained_by) / "reference_logits.pt")
    # bf16 releases cannot meet an fp32 tolerance; their check is against the rounding they introduce.
    tolerance = cfg.logits_tolerance if cfg.dtype == "float32" else max(cfg.logits_tolerance, 5e-2)
    verification = verify(out, reference, tolerance, cfg.max_new_tokens)
    write_json_atomic(ws.stage_dir("release") / "verification.json", verification)
    write_model_card(recipe, ws, out, trained_by, verification, model)
    return StageResult(
        counts={"model_dir": str(out), "max_abs_logit_diff": verification["max_abs_logit_diff"],
                "sample": verification["samples"][0]["prompt"] + verification["samples"][0]["completion"]},
        outputs=[cfg.model_name, "verification.json"],
    )
