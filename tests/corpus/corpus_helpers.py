"""Shared helpers for the corpus tests: run the corpus stage on a tmp recipe and check the invariant."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from kamado.recipe import load_recipe
from kamado.local import run_stages

# Short test documents: Swallow's 400-character and 20-character-sentence minimums are switched down.
LOOSE_RULES = "{min_chars: 20, min_hiragana_fraction: 0.1, min_avg_sentence_length: 0}"


def run_corpus(tmp_path: Path, sources_yaml: str, extra: str = "", num_shards: int = 2, rules: str = LOOSE_RULES) -> dict:
    """Write a recipe with the given `sources:` block, run the corpus stage, check read = kept + Σ dropped +
    Σ rejected on the merged report and on every shard report; return the merged report."""
    (tmp_path / "r.yaml").write_text(
        f"name: t\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: {num_shards}\n  workers: 1\n"
        f"  rules: {rules}\n{extra}  sources:\n{sources_yaml}", encoding="utf-8")
    run_stages(load_recipe(tmp_path / "r.yaml"), ["corpus"], log=lambda s: None)
    report = json.loads((tmp_path / "run/corpus/report.json").read_text())
    check_invariant(report, tmp_path / "run/corpus")
    return report


def check_invariant(report: dict, folder: Path) -> None:
    rejected = sum(v for k, v in report["dropped"].items() if k.startswith("rejected:"))
    rules = sum(v for k, v in report["dropped"].items() if not k.startswith("rejected:"))
    assert rejected == report["docs_rejected"] == sum(report["rejected"].values())
    assert report["docs_in"] == report["docs_kept"] + rules + rejected, report
    for shard in sorted((folder / "work").glob("report-*.json")):
        s = json.loads(shard.read_text())
        assert s["docs_in"] == s["kept"] + sum(s["dropped"].values()), shard
    written = 0
    for shard in (folder / "data").glob("shard-*.jsonl.gz"):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            written += sum(1 for _ in fh)
    assert written == report["docs_kept"]


def kept_docs(folder: Path) -> dict[str, dict]:
    out = {}
    for shard in sorted((folder / "data").glob("shard-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            out.update((d["id"], d) for d in map(json.loads, fh))
    return out


def rejects(folder: Path) -> list[dict]:
    rows = []
    for f in sorted((folder / "work").glob("rejects-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
    return rows


def prose() -> list[str]:
    """Ordinary Japanese paragraphs written for these tests (varied, so no repetition rule fires)."""
    return [
        "今朝は早く起きて、近くの公園まで散歩に出かけた。桜の花はもう散り始めていて、道の端に薄い桃色の花びらが積もっていた。",
        "図書館で借りた本を読み終えたので、感想を短くまとめておくことにした。登場人物の心の動きが丁寧に描かれていて印象に残った。",
        "新しい料理に挑戦しようと思い、市場で季節の野菜をいくつか買ってきた。味付けは控えめにして、素材の香りを生かすつもりだ。",
        "駅前の商店街では、週末ごとに小さな市が開かれている。地元の農家が育てた果物や手作りのお菓子が並び、多くの人でにぎわう。",
        "雨の日が続いたせいか、庭の草が驚くほど伸びていた。午後になって晴れ間がのぞいたので、急いで草取りを済ませることにした。",
        "友人から届いた手紙には、遠い町での暮らしの様子が書かれていた。慣れない土地でも元気に過ごしていると知って安心した。",
    ]
