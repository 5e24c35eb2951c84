"""What a stage's fingerprint hashes, and how a change between two fingerprints is told to the user.

The fingerprint covers a stage's result keys (its config without operational, extendable and layout keys, the
marks in kamado/config.py; layout keys count as the samples per optimizer step), its inputs' identities
(kamado/inputs.py) and the done-marker of the stage before it. kamado/stage.py records it in STARTED.json and
DONE.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import is_dataclass
from typing import Any

from kamado.config import marked_keys
from kamado.recipe import to_dict


def result_config(cfg: Any) -> Any:
    """The stage config as a dict without its operational and extendable keys (what the fingerprint covers)."""
    data = to_dict(cfg) if is_dataclass(cfg) else cfg
    return _prune(cfg, data)


def _prune(obj: Any, data: Any) -> Any:
    if is_dataclass(obj) and isinstance(data, dict):
        layout = marked_keys(type(obj), "layout")
        skip = marked_keys(type(obj), "operational") | marked_keys(type(obj), "extendable") | layout
        pruned = {k: _prune(getattr(obj, k, None), v) for k, v in data.items() if k not in skip}
        if layout:  # the allocation may change between runs; the samples per optimizer step may not
            pruned["samples_per_step"] = obj.nodes * obj.nproc_per_node * obj.micro_batch_size * obj.grad_accum
        return pruned
    if isinstance(obj, list) and isinstance(data, list):
        return [_prune(o, d) for o, d in zip(obj, data)]
    return data


def describe_change(recorded: dict | None, basis: dict) -> list[str]:
    """What differs between a folder's recorded basis and the recipe's: `key: old → new`, changed input files,
    a redone upstream stage."""
    if recorded is None:
        return ["no readable STARTED.json or DONE.json (an interrupted start)"]
    old = recorded.get("basis")
    if old is None:
        return ["recorded by an older kamado (no fingerprint basis)"]
    stage = basis["stage"]
    changes = [f"{stage}.{k}: {a!r} → {b!r}" for k, a, b in _diff(old.get("config"), basis["config"])]
    old_in, new_in = old.get("inputs", {}), basis["inputs"]
    for path in sorted(set(old_in) | set(new_in)):
        if old_in.get(path) != new_in.get(path):
            what = "added" if path not in old_in else "removed" if path not in new_in else "changed"
            changes.append(f"input {path} {what}")
    if old.get("upstream") != basis["upstream"]:
        prev = (basis["upstream"] or old.get("upstream") or {}).get("stage")
        changes.append(f"the stage before it ({prev}) was redone")
    return changes or ["fingerprint changed"]


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [(prefix, a, b)]


def fingerprint_of(basis: dict) -> str:
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
