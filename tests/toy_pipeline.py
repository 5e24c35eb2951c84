"""A stage kamado does not have, added the way a lab would add one: a config, two functions and one StageSpec in a
pipeline of its own (kamado's stages plus this one), selected with KAMADO_PIPELINE=tests.toy_pipeline:PIPELINE.
tests/test_toy_stage.py runs it locally and on the Slurm test cluster; nothing in kamado/ names it.

The stage counts the documents of the corpus stage's final shards and how often a word occurs in them: one phase
with a task per group of shards (a process pool here, a job array on Slurm), then a finish that adds them up.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass

from kamado.config import operational
from kamado.durable import write_atomic
from kamado.pipeline import PIPELINE, Phase, Pipeline, StageSpec
from kamado.stage import StageResult

STAGE = "wordcount"


@dataclass
class WordCountConfig:
    word: str = "の"
    workers: int = operational(2)


def _shards(ws) -> list:
    return sorted((ws.stage_dir("corpus") / "data").glob("shard-*.jsonl.gz"))


def _num_tasks(recipe, ws) -> int:  # noqa: ARG001
    return len(_shards(ws))


def _array_tasks(recipe) -> int:
    return recipe.corpus.num_shards


def _workers(recipe, ws) -> int:  # noqa: ARG001
    return recipe.wordcount.workers


def count_task(recipe, ws, task: int, num_tasks: int) -> dict:
    stats = {"items": 0, "skipped_done": 0}
    for i, shard in enumerate(_shards(ws)):
        if i % num_tasks != task:
            continue
        out = ws.stage_dir(STAGE) / f"count-{i:05d}.json"
        stats["items"] += 1
        if out.is_file():
            stats["skipped_done"] += 1
            continue
        docs = hits = 0
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            for line in fh:
                docs += 1
                hits += json.loads(line)["text"].count(recipe.wordcount.word)
        write_atomic(out, json.dumps({"shard": shard.name, "docs": docs, "hits": hits}))
    return stats


def phases(recipe) -> list[Phase]:  # noqa: ARG001
    return [Phase("count", _num_tasks, count_task, _array_tasks, _workers)]


def finish(recipe, ws, timings: dict) -> StageResult:
    parts = [json.loads(p.read_text()) for p in sorted(ws.stage_dir(STAGE).glob("count-*.json"))]
    total = {"word": recipe.wordcount.word, "docs": sum(p["docs"] for p in parts), "hits": sum(p["hits"] for p in parts),
             "shards": len(parts), "tasks": timings["count"]["tasks"]}
    write_atomic(ws.stage_dir(STAGE) / "total.json", json.dumps(total, ensure_ascii=False))
    return StageResult(counts=total, outputs=["total.json"])


WORDCOUNT = StageSpec(STAGE, WordCountConfig, "count a word in the corpus (a toy stage from tests/toy_pipeline.py)",
                      phases="tests.toy_pipeline:phases", finish="tests.toy_pipeline:finish", outputs=("total.json",),
                      default=False)

PIPELINE = Pipeline(stages=(PIPELINE.stages[0], WORDCOUNT, *PIPELINE.stages[1:]), sections=PIPELINE.sections)
