"""The release stage: the weights of the last training stage (its `hf/` export, or its DeepSpeed checkpoint
consolidated here) become a `save_pretrained` folder with tokenizer, generation config, chat template and model
card, verified the way a user would load it: offline AutoModelForCausalLM / AutoTokenizer, logits compared with
the training model's, tokenizer ids compared with SentencePiece's, a greedy sample.

Nothing half-written ever looks complete: the folder is built as `.<name>.partial`, verified, evaluated and
given its card there, and only then renamed to `<name>`; a failure removes the partial folder. A SIGKILL at any
point leaves at most a partial folder (or an older complete release set aside as `.<name>.old`), which the next
run removes: the stage's done-marker is written only after the rename.

kamado deletes only what it made: `model_name` must be a plain folder name, every folder this stage may
remove lies directly inside the release stage folder, is not a symlink, and is listed in `.kamado-made.json`
there (written before the folder is created); anything else in the way is an error, never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from kamado.pipeline import current
from kamado.recipe import Recipe
from kamado.release.card import write_model_card
from kamado.release.consolidate import Source, load_source
from kamado.durable import fsync_dir, fsync_tree, write_json_durable
from kamado.release.portable import make_config_portable
from kamado.stage import StageResult, Workspace, write_json_atomic
from kamado.tokenizer.export import make_portable

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# bf16 weights cannot match fp32 training logits to 1e-4; against training they get this bound, while the
# export path itself is still checked to the recipe's tolerance against the same weights rounded to bf16.
BF16_TRAINING_TOLERANCE = 5e-2


def source_stage(recipe: Recipe) -> str:
    if recipe.release.from_stage:
        if recipe.release.from_stage not in recipe.stages:
            raise RuntimeError(f"release.from_stage={recipe.release.from_stage}: not a stage of this recipe {recipe.stages}")
        return recipe.release.from_stage
    before = recipe.stages[: recipe.stages.index("release")] if "release" in recipe.stages else recipe.stages
    trained = [s for s in before if s in current().policy]
    if not trained:
        raise RuntimeError("release needs a trained model, but no training stage (pretrain, sft, dpo) comes before it")
    return trained[-1]


def chat_template(recipe: Recipe) -> str | None:
    """The template for a tokenizer that has none (tokenizer.chat_template=none): the one SFT/DPO trained on
    (kamado/tokenizer/chat_template.py), so `apply_chat_template` gives the fine-tuning prompt."""
    if not recipe.release.chat_template or not ({"sft", "dpo"} & set(recipe.stages)):
        return None
    from kamado.tokenizer.chat_template import ALPACA_JA

    return ALPACA_JA


def export(source: Source, out: Path, recipe: Recipe, spm_model: Path) -> None:
    from transformers import GenerationConfig

    cfg = recipe.release
    source.model.to(DTYPES[cfg.dtype]).save_pretrained(out, safe_serialization=True, max_shard_size=cfg.max_shard_size)
    source.model.float()  # back to fp32 for the verification's reference forward
    tok = source.tokenizer
    template = chat_template(recipe)
    if template and not tok.chat_template:
        tok.chat_template = template
    tok.save_pretrained(out)
    shutil.copy(spm_model, out / "tokenizer.model")  # the SentencePiece model itself, for non-HF users
    # loadable by transformers 4.5x as well as 5.x (vLLM, lm-eval), context length as the tokenizer's limit
    make_portable(out, model_max_length=int(source.model.config.max_position_embeddings))
    make_config_portable(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=256).save_pretrained(out)


def required_files(out: Path) -> list[str]:
    """What a complete release holds; the weight shards named by the index when sharded."""
    files = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "README.md"]
    index = out / "model.safetensors.index.json"
    if index.is_file():
        files += sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files.append("model.safetensors")
    return files


@torch.no_grad()
def verify(out: Path, source: Source, reference: dict | None, recipe: Recipe) -> dict:
    import sentencepiece as spm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = recipe.release
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    # The weights exactly as released (rounded to the release dtype), computed in fp32: the export path's check.
    rounded = source.model.to(DTYPES[cfg.dtype]).float().eval()
    report = {"source": source.description, "dtype": cfg.dtype, "prompts": len(cfg.prompts), "samples": []}
    max_export = 0.0
    got_logits = []
    for prompt in cfg.prompts:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        expected_ids = [tok.bos_token_id] + sp.encode(prompt)
        if ids[0].tolist() != expected_ids:
            raise RuntimeError(f"release: the released tokenizer's ids for {prompt!r} differ from SentencePiece's: "
                               f"{ids[0].tolist()} != {expected_ids}")
        logits = model(input_ids=ids).logits.float()
        got_logits.append(logits)
        max_export = max(max_export, (logits - rounded(input_ids=ids).logits.float()).abs().max().item())
        out_ids = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        report["samples"].append({"prompt": prompt, "completion": tok.decode(out_ids[0, ids.shape[1]:], skip_special_tokens=True)})
    source.model.float()
    report.update(max_abs_logit_diff_vs_consolidated=max_export, tolerance=cfg.logits_tolerance)
    if max_export > cfg.logits_tolerance:
        raise RuntimeError(f"release: the saved model's logits differ from the consolidated weights' by {max_export:.3g} "
                           f"> {cfg.logits_tolerance}")
    if reference is None:
        report["max_abs_logit_diff"] = None
        report["training_reference"] = "none: reference_logits.pt is from another checkpoint than the one released"
        return report
    if list(reference["prompts"]) != list(cfg.prompts):
        raise RuntimeError("release: reference_logits.pt was computed on other prompts than release.prompts; rerun the training stage")
    tol = cfg.logits_tolerance if cfg.dtype == "float32" else max(cfg.logits_tolerance, BF16_TRAINING_TOLERANCE)
    max_train = 0.0
    for prompt, logits, ref in zip(cfg.prompts, got_logits, reference["logits"]):
        if logits.shape != ref.shape:
            raise RuntimeError(f"release: logits shape {tuple(logits.shape)} != training {tuple(ref.shape)} for {prompt!r}")
        max_train = max(max_train, (logits - ref.float()).abs().max().item())
    report.update(max_abs_logit_diff=max_train, training_tolerance=tol,
                  training_reference=f"reference_logits.pt (checkpoint {reference.get('checkpoint')})")
    if max_train > tol:
        raise RuntimeError(f"release: exported logits differ from the training model's by {max_train:.3g} > {tol}")
    return report


def _evaluate(recipe: Recipe, ws: Workspace, model_dir: Path) -> tuple[dict | None, dict | None]:
    if not recipe.eval.enabled or not recipe.eval.tasks:
        return None, None
    from kamado.eval.contamination import contamination, task_items, training_sources
    from kamado.eval.run import evaluate

    out = ws.stage_dir("release") / "eval"
    results = evaluate(recipe.eval, model_dir, tokens_dir=ws.stage_dir("tokenizer") / "tokens", out_dir=out)
    items = task_items(recipe.eval.tasks)
    sources = training_sources(recipe, ws)  # the corpus and every fine-tuning stage's data
    report = None
    if items and sources:
        report = contamination(items, sources, recipe.eval.contamination_ngram)
        write_json_atomic(out / "contamination.json", report)
    return results, report


OWNED = ".kamado-made.json"  # the folders this stage created inside its stage folder (the only ones it removes)


class ReleaseFolderError(RuntimeError):
    """A folder the release would have to replace or remove was not made by kamado: it is left alone."""


def plain_name(name: str) -> str:
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0\n"):
        raise ReleaseFolderError(f"release.model_name: {name!r} must be a plain folder name (no '/', no leading '.')")
    return name


def _owned(folder: Path) -> set[str]:
    path = folder / OWNED
    return set(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else set()


def _claim(folder: Path, name: str) -> Path:
    """Record `name` as kamado's before creating it, so a kill right after creation still leaves it removable."""
    write_json_durable(folder / OWNED, sorted(_owned(folder) | {name}))
    return folder / name


def _remove_owned(folder: Path, name: str) -> None:
    """Remove folder/name if this stage made it; a folder it did not make is an error, never deleted."""
    path = folder / name
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or path.resolve().parent != folder.resolve() or name not in _owned(folder):
        raise ReleaseFolderError(f"release: {path} exists but was not created by kamado's release stage; "
                                 f"move it away or choose another release.model_name")
    shutil.rmtree(path)


def run(recipe: Recipe, ws: Workspace) -> StageResult:
    cfg = recipe.release
    name = plain_name(cfg.model_name)
    stage = source_stage(recipe)
    source = load_source(recipe, ws, stage)
    ref_path = ws.stage_dir(stage) / "reference_logits.pt"
    reference = torch.load(ref_path, map_location="cpu", weights_only=True) if ref_path.is_file() else None
    if reference is not None and source.checkpoint_tag != reference.get("checkpoint"):
        reference = None  # computed on the final weights; this release is of another checkpoint

    folder = ws.stage_dir("release")
    folder.mkdir(parents=True, exist_ok=True)
    final, partial_name, old_name = folder / name, f".{name}.partial", f".{name}.old"
    for leftover in (partial_name, old_name):  # what a killed run left behind
        _remove_owned(folder, leftover)
    if (final.exists() or final.is_symlink()) and name not in _owned(folder):
        raise ReleaseFolderError(f"release: {final} exists but was not created by kamado's release stage; "
                                 f"move it away or choose another release.model_name")
    partial = _claim(folder, partial_name)
    partial.mkdir()
    try:
        export(source, partial, recipe, ws.stage_dir("tokenizer") / "spm.model")
        verification = verify(partial, source, reference, recipe)
        results, contamination = _evaluate(recipe, ws, partial)
        write_model_card(recipe, ws, partial, stage, verification, source.model, results, contamination)
        missing = [f for f in required_files(partial) if not (partial / f).is_file()]
        if missing:
            raise RuntimeError(f"release: {partial} lacks {', '.join(missing)}")
        write_json_atomic(folder / "verification.json", verification)
        fsync_tree(partial)  # save_pretrained never fsyncs: the name must not appear before the bytes are on disk
        _claim(folder, old_name)
        _claim(folder, name)
        if final.exists():  # set the complete previous release aside first: one rename, never a delete
            os.replace(final, folder / old_name)
        os.replace(partial, final)
        fsync_dir(folder)
        _remove_owned(folder, old_name)
    except BaseException:
        _remove_owned(folder, partial_name)
        raise
    weights = [f for f in required_files(final) if f.endswith(".safetensors")]
    counts = {"model_dir": str(final), "source": source.description, "weight_files": len(weights),
              "max_abs_logit_diff": verification["max_abs_logit_diff"],
              "sample": verification["samples"][0]["prompt"] + verification["samples"][0]["completion"]}
    if results:
        counts["eval"] = {f"{t['task']}-{t.get('shots', 0)}shot": t.get("accuracy", t.get("perplexity", t.get("char_f1")))
                          for t in results["tasks"]}
    return StageResult(counts=counts, outputs=[cfg.model_name, "verification.json"] + (["eval"] if results else []))
