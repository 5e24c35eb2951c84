"""Resumable shards (a killed run redoes only the missing shards, same output) and the report's files."""

import gzip
import json

from kamado.corpus.plan import ensure_plan
from kamado.corpus.stage import run_shard
from kamado.recipe import load_recipe
from kamado.local import run_stages
from kamado.stage import Workspace
from tests.corpus.corpus_helpers import LOOSE_RULES, check_invariant
from tests.helpers import EXAMPLES

SOURCES = (f"    - {{name: prose, paths: [{EXAMPLES / 'corpus' / 'prose.jsonl'}]}}\n"
           f"    - {{name: web, paths: [{EXAMPLES / 'corpus' / 'web.jsonl.gz'}]}}\n")


def _recipe(tmp_path, workdir):
    p = tmp_path / f"{workdir}.yaml"
    p.write_text(f"name: t\nworkdir: {workdir}\nstages: [corpus]\ncorpus:\n  num_shards: 3\n  workers: 1\n"
                 f"  rules: {LOOSE_RULES}\n  sources:\n{SOURCES}", encoding="utf-8")
    return load_recipe(p)


def _data(folder):
    out = []
    for shard in sorted((folder / "data").glob("shard-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            out.append(fh.read())
    return out


def test_killed_run_redoes_only_missing_shards_with_the_same_output(tmp_path):
    fresh = _recipe(tmp_path, "fresh")
    run_stages(fresh, ["corpus"], log=lambda s: None)

    resumed = _recipe(tmp_path, "resumed")
    ws = Workspace(resumed)
    ws.prepare("corpus")  # as a Slurm array task does before its shard
    plan = ensure_plan(resumed, ws, 3)  # whole small files: the shards with a file to read
    done, cut = sorted({sl.shard for sl in plan})[:2]
    first = run_shard(resumed, ws, done, 3)  # this shard finished before the "kill"
    work = ws.stage_dir("corpus") / "work"
    marker = work / f"filtered-{done:05d}.done.json"
    before = marker.stat().st_mtime_ns
    (work / f"filtered-{cut:05d}.jsonl.zst.tmp").write_bytes(b"half-written garbage")  # this one was cut short
    run_stages(resumed, ["corpus"], log=lambda s: None)
    assert marker.stat().st_mtime_ns == before and first["docs_in"] > 0  # the finished shard was not redone
    assert not (work / f"filtered-{cut:05d}.jsonl.zst.tmp").exists()
    assert _data(ws.stage_dir("corpus")) == _data(Workspace(fresh).stage_dir("corpus"))
    a = json.loads((ws.stage_dir("corpus") / "report.json").read_text())
    b = json.loads((Workspace(fresh).stage_dir("corpus") / "report.json").read_text())
    for key in ("docs_in", "docs_kept", "dropped", "dropped_chars", "pii_masked", "per_source"):
        assert a[key] == b[key], key


def test_report_files_table_chart_and_samples(tmp_path):
    recipe = _recipe(tmp_path, "run")
    run_stages(recipe, ["corpus"], log=lambda s: None)
    folder = Workspace(recipe).stage_dir("corpus")
    report = json.loads((folder / "report.json").read_text())
    check_invariant(report, folder)
    # the sample's noisy pages are caught by named rules, with characters counted per reason
    for reason in ("too_short", "low_japanese_fraction", "low_hiragana_fraction", "exact_duplicate"):
        assert report["dropped"].get(reason, 0) > 0, reason
    assert report["dropped_chars"]["low_japanese_fraction"] > 0
    assert report["pii_masked"]["email"] > 0 and report["pii_masked"]["phone"] > 0
    table = (folder / "drops.txt").read_text(encoding="utf-8")
    assert "low_japanese_fraction" in table and "kept" in table
    assert (folder / "drops.png").read_bytes()[:4] == b"\x89PNG"
    samples = json.loads((folder / "dropped_samples.json").read_text())
    assert 1 <= len(samples["too_short"]) <= 3 and all(s["where"] for s in samples["too_short"])
    for shard in range(3):
        shard_report = json.loads((folder / "work" / f"report-{shard:05d}.json").read_text())
        assert shard_report["docs_in"] == shard_report["kept"] + sum(shard_report["dropped"].values())
