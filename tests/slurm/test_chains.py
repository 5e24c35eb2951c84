"""jobs.json keeps every chain and is written atomically, with a temp file of its own per writer. No cluster."""
from __future__ import annotations

import json
import multiprocessing

from kamado.slurm.chains import Chain, read_record, recorded_job_ids, write_record


def test_a_record_from_before_the_history_becomes_its_first_chain(tmp_path):
    (tmp_path / "slurm").mkdir()
    old = {"stages": {"corpus": [{"id": "11", "role": "shards", "tasks": 4}, {"id": "12", "role": "finish"}],
                      "tokenizer": [{"id": "13", "role": "stage"}]}}
    (tmp_path / "slurm" / "jobs.json").write_text(json.dumps(old))
    chain = Chain(tmp_path, ["tokenizer"], replaces=["13"])
    chain.add("tokenizer", {"id": "20", "role": "stage"})
    record = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert [c["chain"] for c in record["chains"]] == [1, 2]
    assert record["chains"][0]["stages"] == old["stages"] and record["chains"][1]["replaces"] == ["13"]
    assert record["stages"]["corpus"] == old["stages"]["corpus"]  # a stage the new chain left alone keeps its jobs
    assert record["stages"]["tokenizer"] == [{"id": "20", "role": "stage"}]
    assert recorded_job_ids(record) == ["11", "12", "13", "20"]  # what `kamado slurm cancel` looks at


def _hammer(workdir, tag: str, n: int, errors) -> None:
    try:
        for i in range(n):
            write_record(workdir, {"stages": {}, "chains": [], "writer": tag, "i": i, "pad": "x" * 4096})
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        errors.put(f"{tag}: {type(exc).__name__}: {exc}")


def test_two_writers_at_once_never_share_a_temp_file(tmp_path):
    """Before, both wrote `jobs.json.tmp`: one writer's rename moved the other's file away (FileNotFoundError) or
    published a mix. Each writer now has its own temp file; every read sees one whole record."""
    (tmp_path / "slurm").mkdir()
    write_record(tmp_path, {"stages": {}, "chains": [], "writer": "-"})
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    writers = [ctx.Process(target=_hammer, args=(tmp_path, tag, 300, errors)) for tag in "ab"]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers):
        assert read_record(tmp_path)["writer"] in ("-", "a", "b")  # never torn or empty
        reads += 1
    for w in writers:
        w.join()
    assert errors.empty(), errors.get()
    assert [w.exitcode for w in writers] == [0, 0] and reads > 0
    assert [p.name for p in (tmp_path / "slurm").iterdir()] == ["jobs.json"]  # no temp file left behind
