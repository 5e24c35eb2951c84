"""Contamination report: which evaluation items share a long character n-gram with the training corpus.

Japanese has no spaces, so n-grams are of characters (NFKC, whitespace removed), not words; the default n=20 is
long enough that ordinary phrases do not match by chance. The evaluation side is small: its n-grams go into a
set, and the corpus is streamed once, each of its n-grams looked up in that set (memory stays at the size of the
evaluation data however large the corpus is).
"""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

from kamado.eval.data import Item, read_items


def normalize(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def item_segments(item: Item) -> list[str]:
    """The texts of an item a model could have memorised: each prompt field and the answer(s), kept apart so
    that no n-gram spans two fields (a question glued to a choice is not text anyone wrote)."""
    segments = [str(v) for k, v in item.fields.items() if k != "title" and not k.startswith("choice")]
    segments += item.answers + ([item.choices[item.label]] if item.choices and item.label is not None else [])
    return [normalize(s) for s in segments]


def corpus_texts(corpus_dir: Path) -> Iterator[str]:
    shards = sorted((corpus_dir / "data").glob("shard-*.jsonl.gz"))
    if not shards:
        raise FileNotFoundError(f"contamination: no corpus shards under {corpus_dir / 'data'}")
    for shard in shards:
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["text"]


def contamination(tasks: dict[str, list[Item]], corpus: Iterable[str] | dict[str, Iterable[str]], n: int = 20,
                  examples: int = 5) -> dict:
    """For each task: items checked, items with at least one n-gram in the training data, items with half or more.

    `corpus` is one stream of texts or several named ones ({"corpus": ..., "sft": ..., "dpo": ...}); with several,
    each task also says how many items overlap each source (`by_source`)."""
    sources = corpus if isinstance(corpus, dict) else {"corpus": corpus}
    grams_of: dict[str, list[set[str]]] = {}
    index: set[str] = set()
    for task, items in tasks.items():
        grams_of[task] = []
        for item in items:
            g = {t[i:i + n] for t in item_segments(item) for i in range(len(t) - n + 1)}
            grams_of[task].append(g)
            index |= g
    found_in: dict[str, set[str]] = {}
    report = {"ngram_chars": n, "sources": {}, "tasks": {}}
    for name, texts in sources.items():
        found: set[str] = set()
        docs = chars = 0
        for text in texts:
            t = normalize(text)
            docs += 1
            chars += len(t)
            found.update(t[i:i + n] for i in range(len(t) - n + 1) if t[i:i + n] in index)
        found_in[name] = found
        report["sources"][name] = {"documents": docs, "characters": chars}
    if "corpus" in report["sources"]:  # the keys the model card and older reports use
        report.update(corpus_documents=report["sources"]["corpus"]["documents"],
                      corpus_characters=report["sources"]["corpus"]["characters"])
    found = set().union(*found_in.values())
    for task, items in tasks.items():
        any_hit, half, too_short, ids = 0, 0, 0, []
        by_source = dict.fromkeys(found_in, 0)
        for item, g in zip(items, grams_of[task]):
            if not g:
                too_short += 1
                continue
            hits = len(g & found)
            if hits:
                any_hit += 1
                if len(ids) < examples:
                    ids.append(item.id)
                for name, f in found_in.items():
                    by_source[name] += bool(g & f)
            half += hits * 2 >= len(g)
        checked = len(items) - too_short
        report["tasks"][task] = {"items": len(items), "shorter_than_n": too_short, "with_any_overlap": any_hit,
                                 "with_half_overlap": half, "overlap_rate": round(any_hit / checked, 4) if checked else None,
                                 "by_source": by_source, "example_ids": ids}
    return report


def record_texts(paths: list[str]) -> Iterator[str]:
    """Every string in each fine-tuning record, whatever its layout (instruction/input/output, messages,
    prompt/chosen/rejected)."""
    from kamado.corpus.dedup.decontam import _strings
    from kamado.jsonl import iter_jsonl

    for path in paths:
        for _, rec in iter_jsonl(path):
            yield from _strings(rec)


def training_sources(recipe, ws) -> dict[str, Iterable[str]]:
    """Everything the released model was trained on, by source: the corpus stage's kept documents and the records of
    each fine-tuning stage in the recipe (SFT, reward, DPO and PPO data files)."""
    sources: dict[str, Iterable[str]] = {}
    if (ws.stage_dir("corpus") / "data").is_dir() and any((ws.stage_dir("corpus") / "data").glob("shard-*.jsonl.gz")):
        sources["corpus"] = corpus_texts(ws.stage_dir("corpus"))
    for stage in ("sft", "reward", "dpo", "ppo"):
        files = [f for f in (getattr(recipe, stage).data or []) if Path(f).is_file()] if stage in recipe.stages else []
        if files:
            sources[stage] = record_texts(files)
    return sources


def task_items(task_cfgs) -> dict[str, list[Item]]:
    """The items each (non-perplexity) task scores, keyed by task name (first occurrence wins)."""
    out: dict[str, list[Item]] = {}
    for t in task_cfgs:
        if t.name == "perplexity" or t.name in out:
            continue
        items = read_items(t.name, t.path)
        out[t.name] = items[: t.limit] if t.limit else items
    return out


def format_contamination(report: dict) -> str:
    n = report["ngram_chars"]
    names = list(report.get("sources", {"corpus": None}))
    lines = [f"| task | items | checked (≥ {n} chars) | with a shared {n}-char n-gram ({' / '.join(names)}) | with ≥ half shared |",
             "|---|---|---|---|---|"]
    for task, r in report["tasks"].items():
        per = " / ".join(f"{r['by_source'][s]:,}" for s in names) if "by_source" in r and len(names) > 1 else ""
        lines.append(f"| {task} | {r['items']:,} | {r['items'] - r['shorter_than_n']:,} | {r['with_any_overlap']:,}"
                     f"{f' ({per})' if per else ''} | {r['with_half_overlap']:,} |")
    return "\n".join(lines)
