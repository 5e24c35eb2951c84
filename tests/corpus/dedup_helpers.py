"""Builders for the dedup tests: a corpus-stage recipe whose quality rules let every document through, texts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from kamado.corpus.config import QualityRules

from kamado.recipe import load_recipe
from tests.helpers import write_jsonl


def rules_off() -> list[str]:
    """--set overrides that turn every quality rule off: the dedup tests must see every document they write."""
    out = []
    for f in dataclasses.fields(QualityRules):
        if f.name.startswith("min_") and f.type in ("int", "float", int, float):
            out.append(f"corpus.rules.{f.name}=0")
        elif f.name.startswith("max_") and f.type in ("int", int):
            out.append(f"corpus.rules.{f.name}=1000000000")
        elif f.name.startswith("max_") and f.type in ("float", float):
            out.append(f"corpus.rules.{f.name}=1000000000.0")
    return out


def corpus_recipe(tmp_path: Path, shards: list[list[dict]], *overrides: str, num_shards: int | None = None):
    """One source file per list in `shards`; with num_shards = len(shards) files and shards line up only when
    each file holds one document, so tests that need a document in a given shard use one doc per file."""
    paths = [write_jsonl(tmp_path / f"src{i:02d}.jsonl", docs).name for i, docs in enumerate(shards)]
    (tmp_path / "r.yaml").write_text(
        "name: t\nworkdir: run\nstages: [corpus]\ncorpus:\n  mask_pii: false\n  sources:\n"
        f"    - {{name: s, paths: [{', '.join(paths)}]}}\n", encoding="utf-8")
    n = num_shards or max(1, len(shards))
    return load_recipe(tmp_path / "r.yaml", [f"corpus.num_shards={n}", "corpus.workers=1", *rules_off(), *overrides])


KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん山川田海空雨風花"


def random_text(seed: int, n: int) -> str:
    """Japanese-looking text whose 5-grams are practically unique: documents that share nothing by chance."""
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(KANA), n))
