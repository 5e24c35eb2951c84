"""Dedup through the corpus stage and its sharded phases: the bad-input rules, corrupt phase outputs, the report."""

import gzip
import json

import pytest
import zstandard

from kamado.corpus.dedup import CorruptInput, num_tasks_for, run_phase
from kamado.corpus.dedup.layout import dedup_dir
from kamado.corpus.readers import open_binary
from kamado.corpus.stage import run_shard
from kamado.local import run_stages
from kamado.stage import Workspace
from tests.corpus.dedup_helpers import corpus_recipe, random_text
from tests.helpers import SHARED_DATA, shared_data, write_jsonl


def _run(recipe):
    run_stages(recipe, ["corpus"], log=lambda s: None)
    folder = Workspace(recipe).stage_dir("corpus")
    report = json.loads((folder / "report.json").read_text())
    dups = {d["id"]: d for d in json.loads((folder / "duplicates.json").read_text())}
    kept = set()
    for shard in sorted((folder / "data").glob("shard-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            kept.update(json.loads(line)["id"] for line in fh)
    assert report["docs_in"] == report["docs_kept"] + report["docs_dropped"] == len(kept) + len(dups)
    return report, dups, kept


@pytest.mark.parametrize("unit", [1_000_000, 100, 5], ids=["one-key-range", "several-contain-ranges", "several-key-ranges"])
def test_near_exact_and_contained_duplicates_across_shards(tmp_path, monkeypatch, unit):
    """Exact, near and contained duplicates spread over three shards (one document per file).  With bucket_unit_docs=100 the ~550 sampled shingles are spread over several contain units (key ranges)
    and verify counts them in chunks of 100 samples: the same result as one range, one chunk."""
    if unit < 1000:
        monkeypatch.setattr("kamado.corpus.dedup.verify.CONTAIN_CHUNK", 100)  # workers=1: phases run in this process
        # and MinHash in batches of about one document (hashed in the background while the next is built)
        monkeypatch.setattr("kamado.corpus.dedup.signatures.BATCH_SHINGLES", 1000)
    a, b, c, story, x, y = (random_text(s, n) for s, n in ((10, 2000), (11, 2000), (12, 2000), (13, 1500), (14, 900), (15, 900)))
    near_a = a[:700] + "ア" + a[701:1400] + "イ" + a[1401:]  # two characters changed: Jaccard ≈ 0.99
    docs = [
        {"id": "a", "text": a},
        {"id": "a-copy", "text": "\n".join(a[i:i + 100] for i in range(0, 2000, 100))},  # only line breaks differ
        {"id": "a-near", "text": near_a},
        {"id": "b", "text": b},
        {"id": "c", "text": c},
        {"id": "collection-1", "text": x + story},
        {"id": "collection-2", "text": story + y},
        {"id": "story", "text": story},  # wholly inside both collections: removed, and the collections stay apart
        {"id": "short-1", "text": "猫"},  # shorter than the n-gram: only exact copies match it
        {"id": "short-2", "text": "猫"},
        {"id": "short-3", "text": "犬"},
    ]
    # one document per file: the shards get different documents whether records or whole files are sharded
    recipe = corpus_recipe(tmp_path, [[d] for d in docs], "corpus.dedup.near=true", f"corpus.dedup.bucket_unit_docs={unit}",
                           num_shards=3)
    from kamado.corpus.dedup import signatures

    handed = []  # workers=1: the filter phase runs in-process and hands each shard's MinHash rows to signatures
    real = signatures.handed_over_minhash
    monkeypatch.setattr(signatures, "handed_over_minhash", lambda ws, shard: handed.append(real(ws, shard)) or handed[-1])
    if unit == 5:  # shards too large to hand over (as a big shard is): signatures reads the file and hashes it
        monkeypatch.setattr("kamado.corpus.stage.HAND_OVER_BYTES", 0)
    report, dups, kept = _run(recipe)
    assert len(handed) == 3 and all((h is None) == (unit == 5) for h in handed)
    samples = sum(json.loads(p.read_text())["stats"]["samples"] for p in (dedup_dir(Workspace(recipe)) / "sig").glob("*.done.json"))
    contain_units = len(list((dedup_dir(Workspace(recipe)) / "buckets").glob("contain-r*.done.json")))
    assert contain_units == -(-samples // unit) and (contain_units >= 4) == (unit < 1000)
    # a small corpus puts several bands in one unit (≤ bucket_unit_docs entries each): 20 bands → 1 or 3 units
    band_units = sorted(p.name for p in (dedup_dir(Workspace(recipe)) / "buckets").glob("band*.done.json"))
    assert band_units == {1_000_000: ["bands00-19-r0000.done.json"],
                          100: ["bands00-08-r0000.done.json", "bands09-17-r0000.done.json", "bands18-19-r0000.done.json"],
                          5: sorted(f"band{b:02d}-r{r:04d}.done.json" for b in range(20) for r in range(3))}[unit]
    assert {k: (d["duplicate_of"], d["kind"]) for k, d in dups.items()} == {
        "a-copy": ("a", "exact"), "a-near": ("a", "near"), "story": ("collection-1", "contained"), "short-2": ("short-1", "exact")}
    assert dups["a-near"]["similarity"] > 0.9
    assert {"collection-1", "collection-2", "b", "c", "short-3"} <= kept
    assert report["dropped"]["exact_duplicate"] == 2 and report["dropped"]["near_duplicate"] == 1
    d = report["dedup"]
    assert (d["exact_removed"], d["near_removed"], d["contained_removed"]) == (2, 1, 1)
    assert d["cluster_sizes"] == {"2": 1, "3": 1} and d["largest_cluster"] == 3
    assert set(d["phases"]) == {"signatures", "buckets", "verify", "clusters", "apply"}
    assert "dedup: 2 exact, 1 near, 1 contained removed" in (Workspace(recipe).stage_dir("corpus") / "summary.txt").read_text()


def test_duplicate_of_is_the_kept_document_at_the_end_of_a_chain(tmp_path):
    """Two 3-document chains: a copy of a near duplicate, and A ⊂ B ⊂ C with B first. `matched` is the direct
    match (removed itself), `duplicate_of` the kept document an auditor can open."""
    k, story, x, y, z = (random_text(s, n) for s, n in ((60, 2000), (61, 1500), (62, 900), (63, 1000), (64, 800)))
    near = k[:600] + "ア" + k[601:1300] + "イ" + k[1301:]
    docs = [{"id": "keeper", "text": k}, {"id": "near", "text": near},
            {"id": "copy-of-near", "text": "\n".join(near[i:i + 100] for i in range(0, 2000, 100))},
            {"id": "B", "text": story + x}, {"id": "A", "text": story}, {"id": "C", "text": y + story + x + z}]
    report, dups, kept = _run(corpus_recipe(tmp_path, [[d] for d in docs], "corpus.dedup.near=true", num_shards=2))
    got = {i: (d["duplicate_of"], d["matched"], d["kind"]) for i, d in dups.items()}
    assert got == {"near": ("keeper", "keeper", "near"), "copy-of-near": ("keeper", "near", "exact"),
                   "B": ("C", "C", "contained"), "A": ("C", "B", "contained")}
    assert kept == {"keeper", "C"}


def test_empty_shards_and_one_document_shards(tmp_path):
    text = random_text(20, 300)
    docs = [{"id": "x", "text": text}, {"id": "y", "text": text}]
    recipe = corpus_recipe(tmp_path, [docs], "corpus.dedup.near=true", num_shards=5)  # shards 2..4 are empty
    report, dups, kept = _run(recipe)
    assert kept == {"x"} and dups["y"]["duplicate_of"] == "x" and report["docs_in"] == 2


def test_near_off_keeps_exact_only(tmp_path):
    a = random_text(30, 1000)
    docs = [{"id": "a", "text": a}, {"id": "a2", "text": a + "。"}, {"id": "a3", "text": a}]
    report, dups, kept = _run(corpus_recipe(tmp_path, [docs], num_shards=2))
    assert kept == {"a", "a2"} and set(dups) == {"a3"} and "near_duplicate" not in report["dropped"]


def test_decontamination_drops_documents_sharing_a_long_ngram(tmp_path):
    passage = random_text(40, 120)
    evalset = write_jsonl(tmp_path / "eval" / "qa.jsonl", [{"question": "どれ?", "context": passage}])
    docs = [{"id": "leak", "text": random_text(41, 500) + passage[20:90] + random_text(42, 300)},
            {"id": "clean", "text": random_text(43, 800)}]
    recipe = corpus_recipe(tmp_path, [docs], f"corpus.dedup.decontam_paths=[{evalset}]", num_shards=2)
    report, dups, kept = _run(recipe)
    assert kept == {"clean"} and dups["leak"]["kind"] == "contaminated" and dups["leak"]["eval"] == "qa.jsonl:1"
    assert report["dedup"]["contaminated"] == report["dropped"]["contaminated"] == 1


def _filtered(tmp_path, n=2):
    docs = [{"id": f"d{i}", "text": random_text(50 + i % 3, 600)} for i in range(6)]
    recipe = corpus_recipe(tmp_path, [[d] for d in docs], "corpus.dedup.near=true", num_shards=n)  # docs in every shard
    ws = Workspace(recipe)
    ws.prepare("corpus")
    for shard in range(n):
        run_shard(recipe, ws, shard, n)
    return recipe, ws


def test_phases_run_as_array_tasks_and_resume(tmp_path):
    recipe, ws = _filtered(tmp_path)
    for name in ("signatures", "buckets", "verify", "clusters", "apply"):
        n = num_tasks_for(name, recipe, ws)
        for task in range(n):  # as SLURM_ARRAY_TASK_ID 0..n-1 would
            assert run_phase(name, recipe, ws, task, n)["skipped_done"] == 0
    assert run_phase("signatures", recipe, ws, 0, 1) == {"items": 2, "skipped_done": 2, "seconds": pytest.approx(0, abs=1)}
    removed = json.loads((dedup_dir(ws) / "apply" / "00000.duplicates.json").read_text())
    removed += json.loads((dedup_dir(ws) / "apply" / "00001.duplicates.json").read_text())
    assert sorted(d["id"] for d in removed) == ["d3", "d4", "d5"]  # the texts repeat with period 3


def test_a_phase_refuses_a_truncated_or_missing_signature_file(tmp_path):
    recipe, ws = _filtered(tmp_path)
    run_phase("signatures", recipe, ws, 0, 1)
    sig = dedup_dir(ws) / "sig" / "00001.band_keys.npy"
    sig.write_bytes(sig.read_bytes()[:-100])  # what a full disk leaves behind
    with pytest.raises(CorruptInput, match=r"00001.band_keys.npy: truncated .* phase 'signatures'"):
        run_phase("buckets", recipe, ws, 0, 1)
    (dedup_dir(ws) / "sig" / "00001.done.json").unlink()
    with pytest.raises(CorruptInput, match=r"sig/00001.done.json: missing: phase 'signatures' did not finish"):
        run_phase("buckets", recipe, ws, 0, 1)
    run_phase("signatures", recipe, ws, 0, 1)  # redoes only the shard without a marker
    run_phase("buckets", recipe, ws, 0, 1)


def test_a_phase_refuses_a_corrupt_or_deleted_signature_file(tmp_path):
    """Same size, one byte changed (bit rot, a bad copy): the block checksum; the file gone: named as missing."""
    recipe, ws = _filtered(tmp_path)
    run_phase("signatures", recipe, ws, 0, 1)
    sig = dedup_dir(ws) / "sig" / "00000.band_keys.npy"
    data = bytearray(sig.read_bytes())
    data[-3] ^= 0xFF
    sig.write_bytes(bytes(data))
    with pytest.raises(CorruptInput, match=r"sig/00000.band_keys.npy: corrupt: checksum .* phase 'signatures'"):
        run_phase("buckets", recipe, ws, 0, 1)
    sig.unlink()
    with pytest.raises(CorruptInput, match=r"sig/00000.band_keys.npy: missing \(written by phase 'signatures'\)"):
        run_phase("buckets", recipe, ws, 0, 1)
    (dedup_dir(ws) / "sig" / "00000.done.json").unlink()
    run_phase("signatures", recipe, ws, 0, 1)
    run_phase("buckets", recipe, ws, 0, 1)
    minhash = dedup_dir(ws) / "sig" / "00001.minhash.npy"  # verify reads the signatures of its candidate pairs
    minhash.write_bytes(minhash.read_bytes()[:-8])
    with pytest.raises(CorruptInput, match=r"00001.minhash.npy: truncated .* phase 'signatures'"):
        run_phase("verify", recipe, ws, 0, 1)


def test_gold_pairs_of_the_shared_neardup_set(tmp_path):
    """The first 150 documents of the gold set (35 positive, 80 negative pairs inside them): the full set and the
    comparison with datasketch and rensa are in benchmarks/dedup_quality.py."""
    docs_path = shared_data("neardup", "aozora_variants_docs_part1.jsonl.gz")
    with gzip.open(docs_path, "rt", encoding="utf-8") as fh:
        docs = [{"id": d["doc_id"], "text": d["text_plain"]} for d in map(json.loads, (next(fh) for _ in range(150)))]
    recipe = corpus_recipe(tmp_path, [docs[:75], docs[75:]], "corpus.dedup.near=true", "corpus.nfkc=false", num_shards=2)
    _, dups, kept = _run(recipe)

    def root(x):
        while x in dups and dups[x]["duplicate_of"]:
            x = dups[x]["duplicate_of"]
        return x

    ids = {d["id"] for d in docs}
    pairs = [json.loads(line) for line in open(SHARED_DATA / "neardup" / "aozora_variants_pairs_part1.jsonl")]
    pairs = [p for p in pairs if p["doc_a"] in ids and p["doc_b"] in ids]
    positives = [root(p["doc_a"]) == root(p["doc_b"]) for p in pairs if p["label"] == 1]
    negatives = [root(p["doc_a"]) == root(p["doc_b"]) for p in pairs if p["label"] == 0]
    assert (sum(positives), len(positives)) == (35, 35) and (sum(negatives), len(negatives)) == (0, 80)


def test_dedup_settings_are_checked_when_the_recipe_loads(tmp_path):
    from kamado.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"corpus.dedup.bands': bands x rows \(30 x 10\) exceeds num_perm \(200\)"):
        corpus_recipe(tmp_path, [[{"id": "a", "text": "猫"}]], "corpus.dedup.bands=30")


def _outputs(recipe) -> tuple[list, list, dict]:
    folder = Workspace(recipe).stage_dir("corpus")
    data = [gzip.decompress(p.read_bytes()) for p in sorted((folder / "data").glob("shard-*.jsonl.gz"))]
    report = json.loads((folder / "report.json").read_text())
    for phase in report["dedup"].pop("phases").values():
        assert phase["skipped_done"] == 0
    return data, json.loads((folder / "duplicates.json").read_text()), report


def test_a_small_corpus_runs_its_phases_in_process_with_the_results_of_the_pool(tmp_path, monkeypatch):
    """Below SMALL_INPUT_BYTES the dedup phases run in the executor's process even with workers=2 (only the filter
    phase starts a pool), apply reusing the lines signatures read; forced through the pool, every output is equal."""
    import kamado.local
    from kamado.corpus.dedup import layout, phases

    pools = []

    class CountedPool(kamado.local.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    a, b, story, x = (random_text(s, n) for s, n in ((70, 2000), (71, 1800), (72, 1500), (73, 900)))
    near_a = a[:700] + "ア" + a[701:]
    docs = [{"id": "a", "text": a}, {"id": "b", "text": b}, {"id": "a-copy", "text": a},
            {"id": "coll", "text": x + story}, {"id": "a-near", "text": near_a}, {"id": "story", "text": story}]
    results = []
    for mode in ("in-process", "pool"):
        with monkeypatch.context() as m:
            if mode == "in-process":
                m.setattr(kamado.local, "ProcessPoolExecutor", CountedPool)
            else:
                m.setattr(phases, "SMALL_INPUT_BYTES", 0)
            recipe = corpus_recipe(tmp_path / mode, [[d] for d in docs], "corpus.dedup.near=true", "corpus.workers=2",
                                   num_shards=3)
            _run(recipe)
            results.append(_outputs(recipe))
            assert not layout._KEPT_LINES  # nothing held after the stage
            if mode == "in-process":
                assert len(pools) == 1  # the filter phase's; the five dedup phases ran in this process
    for _, _, report in results:
        report.pop("sources")  # the source paths: two folders
    assert results[0] == results[1]
    assert {d["id"]: d["kind"] for d in results[0][1]} == {"a-copy": "exact", "a-near": "near", "story": "contained"}


def test_apply_refuses_a_filter_shard_that_changed_after_signatures(tmp_path):
    """apply copies kept lines as they are: a line whose CRC differs from what signatures saw, or a missing line,
    stops it with an error naming the file and line."""
    recipe, ws = _filtered(tmp_path)
    for name in ("signatures", "buckets", "verify", "clusters"):
        n = num_tasks_for(name, recipe, ws)
        for task in range(n):
            run_phase(name, recipe, ws, task, n)
    path = dedup_dir(ws).parent / "filtered-00000.jsonl.zst"
    with open_binary(str(path)) as fh:
        lines = fh.readlines()
    changed = lines[:1] + [lines[1].replace(b'"text": "', b'"text": "X')] + lines[2:]
    path.write_bytes(zstandard.compress(b"".join(changed)))
    with pytest.raises(CorruptInput, match=r"filtered-00000.jsonl.zst:2: document 'd\d' is not what the signatures phase saw"):
        run_phase("apply", recipe, ws, 0, 1)
    path.write_bytes(zstandard.compress(b"".join(lines[:-1])))
    with pytest.raises(CorruptInput, match=rf"filtered-00000.jsonl.zst:{len(lines)}: the end of the file is not what"):
        run_phase("apply", recipe, ws, 0, 1)
    path.write_bytes(zstandard.compress(b"".join(lines)))
    assert run_phase("apply", recipe, ws, 0, 1)["skipped_done"] == 0
