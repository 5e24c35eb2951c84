"""Where the released weights come from: a training stage's consolidated `hf/` folder, or its DeepSpeed
checkpoint (any ZeRO stage) consolidated here with DeepSpeed's own `get_fp32_state_dict_from_zero_checkpoint`.

A checkpoint is checked before it is read: the tag folder exists, its model-state file is there, and every
rank's optimizer shard is present (a checkpoint copied half-way or cut short is an error that names what is
missing, not a crash inside DeepSpeed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be released: the message names the folder and what is wrong."""


@dataclass
class Source:
    model: object  # an fp32 LlamaForCausalLM holding the weights to release
    tokenizer: object
    description: str  # for the card and verification.json
    checkpoint_tag: str | None  # the DeepSpeed tag the weights come from, when known


def resolve_checkpoint(ckpt_dir: Path, spec: str) -> tuple[Path, str]:
    """'latest' → the tag named in <ckpt_dir>/latest; a tag name → <ckpt_dir>/<tag>; a path → a tag folder
    (holding *model_states.pt) or a checkpoints folder (holding `latest`)."""
    if spec == "latest":
        base = ckpt_dir
    elif "/" not in spec and (ckpt_dir / spec).is_dir():  # a bare tag name, not a path
        return ckpt_dir, spec
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise CheckpointError(f"release.from_checkpoint: {spec!r} is neither a tag in {ckpt_dir} nor an existing path")
        if any(path.glob("*model_states.pt")):
            return path.parent, path.name
        base = path
    latest = base / "latest"
    if not latest.is_file():
        raise CheckpointError(f"release.from_checkpoint: no checkpoint in {base} (no 'latest' file): "
                              f"the training stage has not saved one yet")
    tag = latest.read_text().strip()
    if not (base / tag).is_dir():
        raise CheckpointError(f"release.from_checkpoint: {latest} names tag {tag!r}, but {base / tag} does not exist")
    return base, tag


def _check_complete(tag_dir: Path) -> tuple[int, int]:
    """(zero_stage, world_size) of a checkpoint whose files are all there; else CheckpointError."""
    states = sorted(tag_dir.glob("*model_states.pt"))
    if not states:
        raise CheckpointError(f"{tag_dir}: incomplete checkpoint: no *model_states.pt file")
    try:  # a DeepSpeed file is a pickle: release.from_checkpoint must name a trusted checkpoint (see README)
        meta = torch.load(states[0], map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or corrupt file
        raise CheckpointError(f"{states[0]}: unreadable checkpoint file ({type(exc).__name__}: {exc})") from None
    world = int(meta.get("dp_world_size", 1))
    optim = sorted(tag_dir.glob("*optim_states.pt"))
    zero_stage = int((meta.get("ds_config") or {}).get("zero_optimization", {}).get("stage", 0))
    if zero_stage == 0 and not optim:
        return 0, world
    if len(optim) != world:
        raise CheckpointError(f"{tag_dir}: incomplete checkpoint: {len(optim)} optimizer shard(s) "
                              f"(*optim_states.pt) for a world size of {world}")
    if zero_stage == 3:
        per_rank = [p for p in states if re.match(r"zero_pp_rank_\d+_mp_rank_\d+_model_states\.pt", p.name)]
        if len(per_rank) != world:
            raise CheckpointError(f"{tag_dir}: incomplete ZeRO-3 checkpoint: {len(per_rank)} model-state file(s) for a world size of {world}")
    return zero_stage, world


def consolidate(ckpt_dir: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict]:
    """fp32 state dict of a DeepSpeed checkpoint, and what it was (zero stage, world size, tag)."""
    tag_dir = ckpt_dir / tag
    zero_stage, world = _check_complete(tag_dir)
    if zero_stage == 0:  # no ZeRO partitions: the module's weights are in the model-state file itself
        meta = torch.load(next(tag_dir.glob("*model_states.pt")), map_location="cpu", weights_only=False)
        state = {k: v.float() for k, v in meta["module"].items()}
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
        except Exception as exc:
            raise CheckpointError(f"{tag_dir}: DeepSpeed could not consolidate the checkpoint: {type(exc).__name__}: {exc}") from exc
    return state, {"zero_stage": zero_stage, "world_size": world, "tag": tag, "folder": str(tag_dir)}


def model_from_state(config, state: dict[str, torch.Tensor], where: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config).float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if model.config.tie_word_embeddings:
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise CheckpointError(f"{where}: the checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def _config_for(recipe, ws, stage: str, tokenizer):
    """The model's HF config: from the stage's hf/ export when it exists, else rebuilt from the recipe."""
    from transformers import AutoConfig

    hf = ws.stage_dir(stage) / "hf"
    if (hf / "config.json").is_file():
        return AutoConfig.from_pretrained(str(hf), local_files_only=True)
    init = recipe.pretrain.model.init_from
    if init:
        return AutoConfig.from_pretrained(init, local_files_only=True, vocab_size=len(tokenizer))
    from kamado.train.model import llama_config, resolve_shape

    return llama_config(resolve_shape(recipe.pretrain.model), len(tokenizer), tokenizer.bos_token_id,
                        tokenizer.eos_token_id, tokenizer.pad_token_id)


def load_source(recipe, ws, stage: str) -> Source:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = recipe.release
    stage_dir = ws.stage_dir(stage)
    hf = stage_dir / "hf"
    tok_dir = hf if (hf / "tokenizer.json").is_file() else ws.tokenizer_dir()
    if not (tok_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"release: no tokenizer in {hf} nor in {ws.tokenizer_dir()}")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    if cfg.from_checkpoint:
        ckpt_dir, tag = resolve_checkpoint(stage_dir / "checkpoints", cfg.from_checkpoint)
        state, info = consolidate(ckpt_dir, tag)
        model = model_from_state(_config_for(recipe, ws, stage, tokenizer), state, str(ckpt_dir / tag))
        return Source(model, tokenizer, f"{stage} DeepSpeed checkpoint {tag} (ZeRO-{info['zero_stage']}, "
                      f"{info['world_size']} ranks), consolidated with deepspeed.utils.zero_to_fp32", tag)
    if not any(hf.glob("*.safetensors")) or not (hf / "config.json").is_file():
        raise CheckpointError(f"release: {hf} holds no consolidated weights: the {stage} stage did not finish. "
                              f"Release from its DeepSpeed checkpoint with --set release.from_checkpoint=latest")
    model = AutoModelForCausalLM.from_pretrained(str(hf), local_files_only=True, dtype=torch.float32).eval()
    ref = stage_dir / "reference_logits.pt"
    tag = torch.load(ref, map_location="cpu", weights_only=True).get("checkpoint") if ref.is_file() else None
    return Source(model, tokenizer, f"{stage}/hf (consolidated at the end of training)", tag)

