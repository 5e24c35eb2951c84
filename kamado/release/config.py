"""The release stage's config (its fingerprint also covers the eval section: kamado/pipeline.py also_covers)."""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Optional

from kamado.config import Choice, ConfigError

ReleaseDtype = Choice("ReleaseDtype", "float32 bfloat16")


@dataclass
class ReleaseConfig:
    model_name: str = "kamado-tiny-ja"
    license: str = "apache-2.0"
    dtype: ReleaseDtype = ReleaseDtype.float32
    prompts: list[str] = field(default_factory=lambda: ["日本の首都は", "春になると", "以下は、タスクを説明する指示です。"])
    max_new_tokens: int = 24
    logits_tolerance: float = 1e-4
    # Which training stage to release (None: the last one before release), and where its weights come from:
    # None = its consolidated `hf/` folder; "latest" or a tag (e.g. step0000100) or a path = its DeepSpeed
    # checkpoint, consolidated here (any ZeRO stage).
    from_stage: Optional[str] = None
    from_checkpoint: Optional[str] = None
    max_shard_size: str = "5GB"  # safetensors shards above this size are split (save_pretrained)
    base_model: Optional[str] = None  # Hub id for the card's base_model (default: pretrain.model.init_from's name)
    chat_template: bool = True  # the SFT prompt template as the tokenizer's chat template (when sft/dpo ran)

    def validate(self, key: str) -> None:
        bad_name = plain_name_problem(self.model_name)
        if bad_name:  # the release stage writes (and replaces) <workdir>/release/<model_name>: nothing else
            raise ConfigError(f"{key}.model_name", f"{bad_name}, not {self.model_name!r}")


def plain_name_problem(name: str) -> str | None:
    """Why `name` is not a plain folder name (None when it is one)."""
    if not name or not name.strip():
        return "must be a non-empty name"
    if "/" in name or "\\" in name or os.path.isabs(name):
        return "must be a plain folder name (no '/' or '\\')"
    if name.startswith("."):
        return "must not start with '.' (no '..', no hidden folder)"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "must not hold control characters (newline, NUL)"
    return None
