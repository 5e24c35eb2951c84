"""The shard plan: every record of every input in exactly one slice, in input order, for any shard count."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from kamado.corpus.plan import make_plan, read_plan, write_plan
from kamado.corpus.readers import Rejected, iter_source_file, source_files
from kamado.corpus.config import CorpusSource
from tests.corpus.plan_helpers import write_mixed


def _sources(block: str) -> list[CorpusSource]:
    return [CorpusSource(**d) for d in yaml.safe_load("s:\n" + block)["s"]]


def _key(source: int, file: int, loc, doc) -> tuple:
    what = doc.reason if isinstance(doc, Rejected) else (doc["id"], doc["text"], json.dumps(doc["meta"], sort_keys=True))
    return source, file, loc.path, loc.line, what


def _whole(sources: list[CorpusSource]) -> list[tuple]:
    """Every record of every input, read whole, in input order: what the plan must reproduce."""
    out = []
    for s_idx, s in enumerate(sources):
        for f_idx, path in enumerate(source_files(s.paths, s.format)):
            out += [_key(s_idx, f_idx, loc, doc) for loc, doc in iter_source_file(path, s.format, "text", "id", s.name)]
    return out


def _planned(sources: list[CorpusSource], plan) -> list[tuple]:
    out = []
    for sl in sorted(plan, key=lambda sl: sl.shard):  # stable: a shard's slices stay in plan order
        records = iter_source_file(sl.path, sl.fmt, "text", "id", sources[sl.source].name, part=sl.part)
        out += [_key(sl.source, sl.file, loc, doc) for loc, doc in records]
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return _sources(write_mixed(tmp_path_factory.mktemp("mixed")))


def test_plan_covers_every_record_once_in_input_order(mixed):
    whole = _whole(mixed)
    assert len(whole) > 150 and any(w[-1] == "invalid_json" for w in whole)
    kinds = set()
    for n in range(1, 18):
        plan = make_plan(mixed, n, max_slice_bytes=700, min_slice_bytes=1)  # tiny slices: many cuts
        kinds |= {sl.kind for sl in plan}
        assert [sl.shard for sl in plan] == sorted(sl.shard for sl in plan)  # contiguous runs in input order
        assert _planned(mixed, plan) == whole, n  # same records, same lines/ids/meta, each exactly once
    assert kinds == {"file", "bytes", "row_groups", "rows"}


def test_plan_with_default_sizes_keeps_small_files_whole_and_round_trips(mixed, tmp_path):
    plan = make_plan(mixed, 17)
    assert {sl.kind for sl in plan} == {"file"}
    write_plan(tmp_path / "plan.json", 17, plan)
    assert read_plan(tmp_path / "plan.json", 17) == plan
    with pytest.raises(RuntimeError, match="planned for 17 shards"):
        read_plan(tmp_path / "plan.json", 4)


def test_byte_slices_start_at_line_starts_with_multibyte_and_long_lines(tmp_path):
    rows = []
    for i in range(400):  # multibyte text; some lines far longer than a slice
        text = f"第{i}行：日本語の文。絵文字🍣も含む。" * (200 if i % 37 == 0 else 1 + i % 5)
        rows.append(json.dumps({"id": i, "text": text}, ensure_ascii=False))
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = path.read_bytes()
    sources = _sources(f"    - {{name: big, paths: ['{path}']}}\n")
    plan = make_plan(sources, 9, max_slice_bytes=2048, min_slice_bytes=1)
    # one slice per shard: a shard's consecutive parts of one file are read as one range
    assert len(plan) == 9 and all(sl.kind == "bytes" for sl in plan)
    assert plan[0].start == 0 and plan[-1].end == len(data)
    for a, b in zip(plan, plan[1:]):
        assert a.end == b.start and data[b.start - 1:b.start] == b"\n"  # each cut right after a newline
        assert b.first == data[:b.start].count(b"\n")  # and it knows the line numbers before it
    got = _planned(sources, plan)
    assert [g[3] for g in got] == list(range(1, 401)) and got == _whole(sources)


def test_ten_thousand_small_files_plan_quickly(tmp_path):
    import os

    folder, blobs = tmp_path / "many", tmp_path / "blobs"
    blobs.mkdir()
    for size in range(7):  # seven file sizes, hard-linked 10,000 times (creating files is slow on a busy disk)
        (blobs / f"{size}").write_bytes(b"x" * (50 + 70 * size))
    for d in range(10):
        (folder / f"d{d}").mkdir(parents=True)
        for i in range(1000):
            os.link(blobs / f"{i % 7}", folder / f"d{d}" / f"{i:04d}.txt")
    sources = _sources(f"    - {{name: many, paths: ['{folder}']}}\n")
    t0 = time.perf_counter()
    plan = make_plan(sources, 64)
    seconds = time.perf_counter() - t0
    assert seconds < 10, seconds
    assert len(plan) == 10_000 and sorted(sl.path for sl in plan) == sorted(set(sl.path for sl in plan))
    per_shard = [sum(sl.nbytes for sl in plan if sl.shard == k) for k in range(64)]
    assert max(per_shard) < 1.1 * sum(per_shard) / 64 and min(per_shard) > 0.9 * sum(per_shard) / 64


def test_uncompressed_warc_is_cut_at_records(tmp_path):
    from tests.corpus.plan_helpers import docs, write_warc

    write_warc(tmp_path / "a.warc", docs("w", 60), gz=False)
    sources = _sources(f"    - {{name: crawl, paths: ['{tmp_path}/a.warc']}}\n")
    data = (tmp_path / "a.warc").read_bytes()
    plan = make_plan(sources, 7, max_slice_bytes=3000, min_slice_bytes=1)
    assert len(plan) == 7 and all(data[sl.start:sl.start + 9] == b"WARC/1.1\r" or data[sl.start:sl.start + 9]
                                 == b"WARC/1.0\r" for sl in plan)
    assert _planned(sources, plan) == _whole(sources)


def test_zstd_frames_cut_only_at_line_ends(tmp_path):
    import zstandard

    lines = [json.dumps({"id": i, "text": f"文{i}。" * (1 + i % 9)}, ensure_ascii=False).encode() + b"\n"
             for i in range(120)]
    frames = [b"".join(lines[i:i + 10]) for i in range(0, 120, 10)]
    frames[5], frames[6] = frames[5] + frames[6][:7], frames[6][7:]  # a frame that ends inside a line
    path = tmp_path / "a.jsonl.zst"
    compressed = [zstandard.ZstdCompressor().compress(f) for f in frames]
    path.write_bytes(b"".join(compressed))
    sources = _sources(f"    - {{name: z, paths: ['{path}']}}\n")
    plan = make_plan(sources, 12, max_slice_bytes=1, min_slice_bytes=1)
    ends = {sum(map(len, compressed[:i + 1])) for i in range(len(compressed))}
    bad = sum(map(len, compressed[:6]))  # after the frame that ends mid-line
    assert len(plan) == 11 and all(sl.start == 0 or sl.start in ends for sl in plan)
    assert bad not in {sl.start for sl in plan}
    assert _planned(sources, plan) == _whole(sources)


def test_symlinks_out_of_a_source_folder_are_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("中身", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("外", encoding="utf-8")
    (tmp_path / "src" / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ValueError, match="link.txt is a link to .*follow_symlinks: true"):
        source_files([str(tmp_path / "src")])
    with pytest.raises(ValueError, match="outside the source root"):
        source_files([str(tmp_path / "src" / "*.txt")])
    assert len(source_files([str(tmp_path / "src")], follow_symlinks=True)) == 2
    assert source_files([str(tmp_path / "src" / "link.txt")]) == [str(tmp_path / "src" / "link.txt")]  # named: read


def test_concurrent_tasks_agree_on_one_plan(tmp_path):
    """Slurm array tasks call run_shard at the same time: whichever is first writes the plan under the workdir
    lock, the others read that one."""
    import os

    from kamado.corpus.plan import ensure_plan
    from kamado.recipe import load_recipe
    from kamado.stage import Workspace
    from tests.corpus.plan_helpers import docs, jsonl_bytes

    for i in range(3):
        (tmp_path / f"{i}.jsonl").write_bytes(jsonl_bytes(docs(f"c{i}", 30)))
    (tmp_path / "r.yaml").write_text("name: t\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: 5\n"
                                     f"  sources:\n    - {{name: a, paths: ['{tmp_path}/*.jsonl']}}\n", encoding="utf-8")
    recipe = load_recipe(tmp_path / "r.yaml")
    pids = []
    for task in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                plan = ensure_plan(recipe, Workspace(recipe), 5)
                (tmp_path / f"task{task}.json").write_text(json.dumps([list(vars(sl).values()) for sl in plan]))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert all(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in pids)
    seen = {(tmp_path / f"task{t}.json").read_text() for t in range(4)}
    assert len(seen) == 1 and len(json.loads(seen.pop())) == 3
    assert not list((tmp_path / "run" / "corpus" / "work").glob("*.tmp*"))
