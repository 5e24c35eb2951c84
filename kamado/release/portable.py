"""config.json in a form every loader of a Llama checkpoint reads the same way.

transformers 5 writes `dtype` and `rope_parameters`; transformers 4.5x (and vLLM and lm-eval, which pin it)
read `torch_dtype`, `rope_theta` and `rope_scaling`, and silently fall back to rope_theta 10,000 when the key is
missing, which would change every logit of a model trained with another base. Both spellings are written.
"""

from __future__ import annotations

import json
from pathlib import Path

from kamado.durable import write_json_durable


def make_config_portable(out_dir: Path) -> dict:
    path = out_dir / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict):
        if "rope_theta" in rope:
            cfg["rope_theta"] = rope["rope_theta"]
        kind = rope.get("rope_type", "default")
        # 4.x: rope_scaling None means plain RoPE; any other type carries its own parameters
        cfg["rope_scaling"] = None if kind == "default" else {k: v for k, v in rope.items() if k != "rope_theta"}
    if not cfg.get("architectures"):
        raise ValueError(f"{path}: no 'architectures' entry; vLLM and AutoModel need it")
    write_json_durable(path, cfg)
    return cfg
