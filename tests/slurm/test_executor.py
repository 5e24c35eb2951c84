"""The Slurm executor against the real local cluster: same results as the local executor, dry run, bad input."""
from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from kamado.cli import main
from kamado.recipe import load_recipe
from kamado.corpus.stage import shard_done_path
from kamado.local import run_stages
from kamado.slurm.cluster import cluster_max_array_size
from kamado.slurm.dry_run import dry_run_folder
from kamado.slurm.executor import plan
from kamado.slurm.status import stage_status
from kamado.stage import Workspace
from tests.helpers import write_jsonl

pytestmark = pytest.mark.slurm

WHEN = ["朝早く", "昼過ぎに", "夕方になって", "夜遅く", "週末に", "春になると", "雨の日には", "夏休みの間", "冬の寒い日に", "日曜日の午後"]
WHO = ["私", "父", "母", "友人", "先生", "祖母", "子供たち", "隣の家の猫", "兄", "妹", "会社の同僚", "留学生"]
WHERE = ["東京", "京都", "大阪の商店街", "北海道", "近くの公園", "図書館", "駅前の喫茶店", "山の上の神社", "静かな海辺", "古い美術館"]
WHAT = ["本を読みました", "散歩をしました", "料理を作りました", "写真を撮りました", "手紙を書きました", "電車に乗りました",
        "花を見に行きました", "歌を歌いました", "絵を描きました", "昔の話を聞きました", "お茶を飲みました", "野菜を買いました"]
HOW = ["とても楽しかったです", "少し疲れました", "また行きたいと思います", "忘れられない一日になりました",
       "新しい発見がありました", "みんなで笑いました", "心が落ち着きました", "時間があっという間に過ぎました"]


def japanese_docs(n: int, seed: int = 0) -> list[dict]:
    """n documents of 3-6 template sentences, plus two exact duplicates, one near duplicate (one word changed),
    one too short, one with an e-mail."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        sentences = [f"{rng.choice(WHEN)}、{rng.choice(WHO)}は{rng.choice(WHERE)}で{rng.choice(WHAT)}が、{rng.choice(HOW)}。"
                     for _ in range(rng.randint(3, 6))]
        docs.append({"id": f"doc{i:04d}", "text": "".join(sentences) + f"これは第{i}話です。"})
    docs += [{"id": "dup-a", "text": docs[3]["text"]}, {"id": "dup-b", "text": docs[7]["text"]}]
    docs += [{"id": "near", "text": docs[11]["text"].replace(f"これは第11話です。", "これは第十一話です。")}]
    docs += [{"id": "short", "text": "短い文です。"}]
    docs += [{"id": "mail", "text": docs[5]["text"] + "連絡は taro@example.jp までどうぞ。"}]
    return docs


def write_recipe(tmp_path: Path, n_docs: int, extra: str = "") -> Path:
    half = japanese_docs(n_docs)
    write_jsonl(tmp_path / "data" / "a.jsonl", half[: len(half) // 2])
    with gzip.open(tmp_path / "data" / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in half[len(half) // 2:])
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""name: slurmtest
workdir: run-slurm
stages: [corpus, tokenizer, pretrain]
corpus:
  sources:
    - {{name: a, paths: [data/a.jsonl]}}
    - {{name: b, paths: ['data/*.jsonl.gz']}}
  num_shards: 4
  workers: 2
  rules: {{min_chars: 50}}  # short template documents; every other rule at its default
tokenizer: {{vocab_size: 450, allow_smaller_vocab: true}}  # needs ~420 (bytes + characters); the templates give ~480
pretrain:
  model: {{preset: tiny}}
  nodes: 2
  nproc_per_node: 1
  seq_len: 64
  micro_batch_size: 4
  max_steps: 6
  warmup_steps: 2
  checkpoint_every: 100
  log_every: 1
slurm:
  partition: debug
  time_minutes: 10
{extra}""", encoding="utf-8")
    return path


def squeue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()


def wait_until_done(recipe, stage: str, timeout: float = 150) -> None:
    ws, deadline = Workspace(recipe), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ws.is_done(stage):
            return wait_until_idle(deadline)  # the job still ends after DONE.json; leave the cluster as found
        states = [s for j in stage_status(recipe).get(stage, {}).get("jobs", []) for s in j["states"]]
        if any(s in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY") for s in states):
            break
        time.sleep(1)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((ws.root / "slurm" / stage).glob("*.err")))
    pytest.fail(f"{stage} not done on Slurm: {stage_status(recipe).get(stage)}\n{logs}")


def wait_until_idle(deadline: float) -> None:
    while time.monotonic() < deadline:
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
        if not squeue() and set(nodes) == {"idle"}:
            return
        time.sleep(0.5)
    pytest.fail(f"jobs still queued: {squeue()}")


def report_without_timings(ws: Workspace) -> str:
    """report.json as text, minus the dedup phases' wall-clock seconds and peak memory (the measurements two runs
    do not share)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "peak_rss_mb")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return json.dumps(strip(json.loads((ws.stage_dir("corpus") / "report.json").read_text())), ensure_ascii=False, indent=1)


def kept_ids(ws: Workspace) -> set[str]:
    ids = set()
    for path in (ws.stage_dir("corpus") / "data").glob("shard-*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            ids.update(json.loads(line)["id"] for line in fh)
    return ids


def job_info(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job -o` as one dict per line (an array: one per task)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    return [dict(t.split("=", 1) for t in line.split() if "=" in t) for line in out.splitlines() if line.strip()]


DEDUP_PHASES = ["signatures", "buckets", "verify", "clusters", "apply"]


def phase_records(ws: Workspace, phase: str) -> list[dict]:
    """The records the phase's tasks left (kamado.phase_tasks), in task order."""
    return [json.loads(p.read_text()) for p in sorted((ws.stage_dir("corpus") / "phases").glob(f"{phase}-*.json"))]


def test_corpus_job_array_and_dedup_phase_arrays_match_local_run(slurm_cluster, tmp_path, capsys):
    """Near dedup on: filter array → one array per dedup phase → finish, each afterok on the one before; the kept
    ids, duplicates.json and report equal the local executor's (whose phases ran in a process pool)."""
    path = write_recipe(tmp_path, 60, extra="  dedup_tasks: 2\n")
    sets = ["corpus.dedup.near=true"]
    assert main(["corpus", str(path), "--executor", "slurm", "--set", sets[0]]) == 0  # returns at once
    slurm_recipe = load_recipe(path, sets)
    record = json.loads((tmp_path / "run-slurm" / "slurm" / "jobs.json").read_text())["stages"]["corpus"]
    # buckets: 3 units (exact; the 20 bands in one unit, a small corpus; containment) over 2 tasks; verify: 1 slice,
    # 2 tasks
    assert [(j["role"], j.get("tasks")) for j in record] == [
        ("filter", 4), ("signatures", 4), ("buckets", 2), ("verify", 2), ("clusters", 1), ("apply", 4), ("finish", None)]
    ids = [j["id"] for j in record]
    for before, job in zip(ids, ids[1:]):  # afterok on the job before, as long as that one has not ended
        dep = job_info(job)[0]["Dependency"]
        assert dep == "(null)" or dep.startswith(f"afterok:{before}"), (job, dep)
    assert job_info(ids[-1])[0]["Dependency"].startswith(f"afterok:{ids[-2]}")  # the finish job waits at least

    local = load_recipe(path, ["workdir=run-local", *sets])
    run_stages(local, ["corpus"], log=lambda s: None)
    wait_until_done(slurm_recipe, "corpus")

    # Separate arrays, one after the other: every task of a phase started after the phase before had ended.
    times = [[(t["StartTime"], t["EndTime"]) for t in job_info(j)] for j in ids]
    assert [len(t) for t in times] == [4, 4, 2, 2, 1, 4, 1]
    for before, after in zip(times, times[1:]):
        assert min(s for s, _ in after) >= max(e for _, e in before), (before, after)

    a, b = Workspace(local), Workspace(slurm_recipe)
    assert kept_ids(b) == kept_ids(a)
    assert not {"dup-a", "short", "near"} & kept_ids(a) and {"doc0003", "doc0011"} <= kept_ids(a)
    dups = json.loads((b.stage_dir("corpus") / "duplicates.json").read_text())
    assert dups == json.loads((a.stage_dir("corpus") / "duplicates.json").read_text())
    assert {d["id"]: (d["kind"], d["duplicate_of"]) for d in dups} == {
        "dup-a": ("exact", "doc0003"), "dup-b": ("exact", "doc0007"), "near": ("near", "doc0011")}
    report_a, report_b = (json.loads((w.stage_dir("corpus") / "report.json").read_text()) for w in (a, b))
    phases_a, phases_b = report_a["dedup"].pop("phases"), report_b["dedup"].pop("phases")
    assert report_b == report_a
    # the same work units, done by the arrays' tasks (local: one pool task per unit)
    assert {k: (p["items"], p["skipped_done"]) for k, p in phases_b.items()} == {k: (p["tasks"], 0) for k, p in phases_a.items()}
    assert [p["tasks"] for p in phases_b.values()] == [4, 2, 2, 1, 4] and phases_a["buckets"]["tasks"] == 3
    assert b.read_done("corpus")["counts"] == a.read_done("corpus")["counts"]
    assert sorted(p.name for p in (b.root / "slurm" / "corpus").glob("*_log.out"))  # logs under <workdir>/slurm/<stage>

    capsys.readouterr()
    assert main(["slurm", "status", str(path)]) == 0  # judged by the submitted recipe (near dedup on)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("corpus"))
    assert "DONE" in line and f"filter {ids[0]}: COMPLETED×4" in line, line
    assert all(f"{role} {job}: COMPLETED" in line for role, job in zip(DEDUP_PHASES, ids[1:6])), line
    assert main(["corpus", str(path), "--executor", "slurm", "--set", sets[0]]) == 0  # done already: nothing submitted
    assert "nothing to submit" in capsys.readouterr().out


def test_dry_run_prints_scripts_and_submits_nothing(slurm_cluster, tmp_path, capsys):
    path = write_recipe(tmp_path, 20, extra="  extra_sbatch: ['--comment=kamado-dry']\n  setup: ['echo setting-up']\n")
    assert main(["run", str(path), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 5  # corpus filter array + finish, tokenizer, pretrain; submit.sh
    assert "#SBATCH --partition=debug" in out and "#SBATCH --array=0-3%4" in out
    assert "#SBATCH --nodes=2" in out and "#SBATCH --comment=kamado-dry" in out and "echo setting-up" in out
    assert "#SBATCH --signal=USR1@120" in out  # training ranks: SIGUSR1 (the loop's signal), not submitit's USR2
    assert "JOBID_OF" not in out and "--dependency" not in "".join(  # dependencies are submit.sh's job
        p.read_text() for p in dry_run_folder(load_recipe(path)).glob("*.sbatch"))
    assert re.search(r"j4=\$\(sbatch --parsable --dependency=afterok:\$j3 \S+/04-pretrain-train\.sbatch\)", out), out
    assert squeue() == [] and not (tmp_path / "run-slurm" / "slurm" / "jobs.json").exists()
    # near dedup: one array per dedup phase between the shards and the finish job
    assert main(["corpus", str(path), "--executor", "slurm", "--dry-run", "--set", "corpus.dedup.near=true"]) == 0
    heads = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("# ---- ") and ".sbatch" in ln]
    assert [h.split(": ", 1)[1] for h in heads] == [
        "corpus / filter, job array of 4 tasks", "corpus / signatures, job array of 4 tasks",
        "corpus / buckets, job array of 4 tasks", "corpus / verify, job array of 4 tasks",
        "corpus / clusters, job array of 1 tasks", "corpus / apply, job array of 4 tasks", "corpus / finish"]
    # More shards than allowed tasks: fewer tasks, each doing several (the cap: the recipe or the cluster's MaxArraySize)
    assert main(["corpus", str(path), "--executor", "slurm", "--dry-run", "--set", "slurm.max_array_tasks=3",
                 "--set", "slurm.array_parallelism=2"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-2%2" in out and "corpus / filter, job array of 3 tasks" in out


def test_dry_run_output_submits_and_runs(slurm_cluster, tmp_path, capsys):
    """What --dry-run writes is really submittable: submit.sh submits the scripts as a chain of afterok jobs that
    run the stages to DONE, and records them so `kamado slurm status` follows them."""
    path = write_recipe(tmp_path, 40)
    assert main(["run", str(path), "--executor", "slurm", "--dry-run", "--until", "tokenizer"]) == 0
    recipe = load_recipe(path)
    folder = dry_run_folder(recipe)
    scripts = sorted(folder.glob("*.sbatch"))
    assert [p.name for p in scripts] == ["01-corpus-filter.sbatch", "02-corpus-finish.sbatch", "03-tokenizer-stage.sbatch"]
    for script in scripts:  # the scheduler accepts each one as it is
        test = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
        assert test.returncode == 0 and "to start at" in test.stderr, (script, test.stderr)
    assert squeue() == [] and not (tmp_path / "run-slurm" / "slurm" / "jobs.json").exists()

    run = subprocess.run(["bash", str(folder / "submit.sh")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "run-slurm" / "slurm" / "jobs.json").read_text())["stages"]
    entries = record["corpus"] + record["tokenizer"]
    assert [(e["role"], e.get("tasks")) for e in entries] == [("filter", 4), ("finish", None), ("stage", None)]
    ids = [e["id"] for e in entries]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == 3 and f"submitted finish job {ids[1]}, after {ids[0]}" in run.stdout
    assert job_info(ids[2])[0]["Dependency"].startswith(f"afterok:{ids[1]}")
    wait_until_done(recipe, "tokenizer")
    assert Workspace(recipe).is_done("corpus") and (Workspace(recipe).stage_dir("tokenizer") / "spm.model").is_file()
    capsys.readouterr()
    assert main(["slurm", "status", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["corpus", "DONE"], ["tokenizer", "DONE"]], lines
    assert f"filter {ids[0]}: COMPLETED×4" in lines[0], lines


def test_shards_are_grouped_below_max_array_size(slurm_cluster, tmp_path):
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert cluster_max_array_size() == int(re.search(r"MaxArraySize\s*=\s*(\d+)", config).group(1))
    recipe = load_recipe(write_recipe(tmp_path, 20), ["corpus.num_shards=7"])
    recipe.slurm.max_array_tasks = 2
    assert [len(s.args) for s in plan(recipe, ["corpus"], "debug", max_array_size=3) if s.array] == [2]
    recipe.slurm.max_array_tasks = None
    filter_array = plan(recipe, ["corpus"], "debug", max_array_size=3)[0]
    assert (filter_array.role, [a[2:] for a in filter_array.args]) == ("filter", [("filter", t, 3) for t in range(3)])
    for args in filter_array.args:  # the array's tasks, run here: task ids 0..2 stay below MaxArraySize=3
        filter_array.fn(*args)
    ws = Workspace(recipe)
    assert [r["items"] for r in phase_records(ws, "filter")] == [3, 2, 2]  # shards 0,3,6 / 1,4 / 2,5
    assert all(shard_done_path(ws, i).is_file() for i in range(7))  # every shard once
    assert filter_array.fn(*filter_array.args[0])["skipped_done"] == 3  # a requeued task: all of it done


def test_failed_shard_fails_the_stage_and_a_rerun_does_only_that_shard(slurm_cluster, tmp_path, capsys):
    path = write_recipe(tmp_path, 60, extra="  max_array_tasks: 2\n")  # filter tasks: shards [0, 2] and [1, 3]
    recipe = load_recipe(path)
    ws = Workspace(recipe)
    work = ws.prepare("corpus") / "work"  # what the tasks do first; they keep this folder (same fingerprint)
    # Shard 2 cannot write its output: a directory sits where its temporary file goes (IsADirectoryError, even
    # for root). Every shard task reads every input file (records go to shard index mod num_shards), so an
    # input file that raises would fail all shards; the output path is where only one shard can fail.
    blocker = work / "filtered-00002.jsonl.zst.tmp"
    blocker.mkdir(parents=True)
    assert main(["corpus", str(path), "--executor", "slurm"]) == 0
    jobs_path = tmp_path / "run-slurm" / "slurm" / "jobs.json"
    record = json.loads(jobs_path.read_text())["stages"]["corpus"]
    assert [(j["role"], j.get("tasks")) for j in record] == [("filter", 2), ("finish", None)]
    wait_until_idle(time.monotonic() + 90)

    info = stage_status(recipe)["corpus"]
    assert info["state"] == "FAILED" and not ws.is_done("corpus") and info["phases"] == {"filter": [0]}  # task 0 failed
    assert [i for i in range(4) if shard_done_path(ws, i).is_file()] == [0, 1, 3]
    assert info["jobs"][1]["states"] == ["CANCELLED"]  # the finish job never ran (afterok never satisfied)
    assert "IsADirectoryError" in "".join(p.read_text() for p in (ws.root / "slurm" / "corpus").glob("*_log.err"))
    capsys.readouterr()
    assert main(["slurm", "status", str(path)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("corpus"))
    assert "FAILED" in line and "filter tasks done 1/2 (missing: 0)" in line, line

    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("filtered-0000[013].*")}
    assert len(kept) == 6  # output and done-marker of shards 0, 1, 3
    blocker.rmdir()  # the fix
    assert main(["corpus", str(path), "--executor", "slurm"]) == 0
    record = json.loads(jobs_path.read_text())["stages"]["corpus"]
    assert [(j["role"], j.get("tasks")) for j in record] == [("filter", 2), ("finish", None)]  # every task again
    local = load_recipe(path, ["workdir=run-local"])
    run_stages(local, ["corpus"], log=lambda s: None)
    wait_until_done(recipe, "corpus")
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("filtered-0000[013].*")} == kept
    # only shard 2 was redone: the tasks found the other three done (task 0: shard 0; task 1: shards 1 and 3)
    assert [(r["items"], r["skipped_done"]) for r in phase_records(ws, "filter")] == [(2, 1), (2, 2)]
    assert report_without_timings(ws) == report_without_timings(Workspace(local))
    assert kept_ids(ws) == kept_ids(Workspace(local))


def test_bad_partition_or_too_many_nodes_fail_before_submitting(slurm_cluster, tmp_path, capsys):
    path = write_recipe(tmp_path, 20)
    assert main(["run", str(path), "--executor", "slurm", "--set", "slurm.partition=nosuchpart"]) == 2
    err = capsys.readouterr().err
    assert "slurm.partition" in err and "nosuchpart" in err and "debug" in err
    assert main(["run", str(path), "--executor", "slurm", "--set", "pretrain.nodes=3"]) == 2
    assert "pretrain.nodes" in capsys.readouterr().err
    assert squeue() == [] and not (tmp_path / "run-slurm" / "slurm" / "jobs.json").exists()


# The 2-node training job (one rank per node, gloo) = local 2-rank run check lives in test_requeue.py: the same
# comparison, with the job stopped and requeued twice on the way (one 2-node run instead of two).
