"""Dedup building blocks: fingerprint, shingles, MinHash, LSH pairs, clusters, containment, checksummed outputs."""

import os

import numpy as np
import pytest

from kamado.corpus.dedup import clusters as cl
from kamado.corpus.dedup.contain import HITS, frac_sample, probe_pairs, probes, required_hits, shared_counts
from kamado.corpus.dedup.decontam import load_eval_ngrams
from kamado.corpus.dedup.exact import exact_key, fingerprint_text
from kamado.corpus.dedup.lsh import band_keys, slice_sorted, star_pairs, unique_pairs
from kamado.corpus.dedup.minhash import MinHasher, estimated_jaccard, shingle_hashes
from kamado.corpus.dedup.store import BLOCK, FINE_BLOCK, CorruptInput, Outputs, write_outputs
from tests.corpus.dedup_helpers import random_text
from tests.helpers import write_jsonl


def test_fingerprint_drops_ruby_annotations_and_whitespace_only():
    raw = "　懐《なつ》き具合を見て、目｜脂《やに》を拭いた［＃「足＋宛」、第3水準1-92-36］。\r\n次の 行"
    assert fingerprint_text(raw) == "懐き具合を見て、目脂を拭いた。次の行"
    assert fingerprint_text("懐き具合を見て、目脂を拭いた。\n\n次の行") == fingerprint_text(raw)
    assert exact_key(fingerprint_text(raw)) == exact_key("懐き具合を見て、目脂を拭いた。次の行")
    assert fingerprint_text("Ａ｜Ｂ") == "Ａ｜Ｂ"  # a bar with no ruby after it is text


def test_shingles_of_short_and_empty_text():
    assert len(shingle_hashes("あいうえおか", 5)) == 2
    assert len(shingle_hashes("あい", 5)) == 1  # shorter than n: the text is its one shingle
    assert len(shingle_hashes("", 5)) == 0
    assert shingle_hashes("あい", 5)[0] != shingle_hashes("あいう", 5)[0]
    same = shingle_hashes("かきくけこかきくけこ", 5)
    assert same[0] == same[5]  # equal n-grams hash equal, wherever they are


def test_minhash_estimates_jaccard():
    a = random_text(1, 3000)
    b = a[:2000] + random_text(2, 1000)  # ~2000 shared 5-grams of ~4000 distinct: Jaccard ≈ 0.5
    ha, hb = shingle_hashes(a, 5), shingle_hashes(b, 5)
    true = len(np.intersect1d(ha, hb)) / len(np.union1d(ha, hb))
    mh = MinHasher(200, seed=1)
    sigs = mh.signatures([ha, hb, ha[:10], hb[:10]])  # long ones chunked, short ones packed: same values
    assert abs(float(estimated_jaccard(sigs[0], sigs[1])) - true) < 0.1
    np.testing.assert_array_equal(sigs[0], mh.signature(ha))
    np.testing.assert_array_equal(sigs[2], mh.signature(ha[:10]))
    np.testing.assert_array_equal(sigs[3], mh.signature(hb[:10]))


def test_band_keys_and_bucket_pairs():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 3, 4], [5, 5, 5, 5]], dtype=np.uint32)
    keys = band_keys(sigs, bands=2, rows=2)
    assert keys.shape == (2, 4)
    assert keys[0, 0] == keys[0, 1] and keys[1, 0] == keys[1, 2] and keys[0, 0] != keys[1, 0]
    ids = np.arange(4, dtype=np.uint64)
    o = np.argsort(keys[0], kind="stable")
    assert sorted(map(tuple, star_pairs(keys[0][o], ids[o]).tolist())) == [(0, 1)]
    p, c = unique_pairs(np.array([[1, 2], [1, 2], [0, 3]], dtype=np.uint64), np.array([2, 3, 1]))
    assert p.tolist() == [[0, 3], [1, 2]] and c.tolist() == [1, 5]


def _info(orders: dict, exact: dict, sizes: dict):
    def info(nodes):
        return (np.array([orders[int(n)] for n in nodes]), np.array([exact[int(n)] for n in nodes], dtype=np.uint64),
                np.array([sizes[int(n)] for n in nodes]))
    return info


def test_clusters_keep_first_in_input_order_and_resolve_containment():
    # 0..2 one near cluster (1 is an exact copy of 2); 10 ⊂ 20 and 10 ⊂ 30: the two collections stay apart.
    edges = np.array([[0, 2], [1, 2], [10, 20], [10, 30]], dtype=np.uint64)
    kinds = np.array([cl.NEAR, cl.EXACT, cl.CONTAINED, cl.CONTAINED], dtype=np.int8)
    sims = np.array([0.9, 1.0, 0.95, 0.92])
    orders = {0: [0, 0, 5], 1: [0, 0, 9], 2: [0, 0, 7], 10: [0, 0, 1], 20: [0, 0, 2], 30: [0, 0, 3]}
    exact = {0: [1, 1], 1: [2, 2], 2: [2, 2], 10: [3, 3], 20: [4, 4], 30: [5, 5]}
    sizes = {0: 100, 1: 100, 2: 100, 10: 50, 20: 500, 30: 400}
    r = cl.cluster(edges, kinds, sims, _info(orders, exact, sizes))
    got = {int(g): (int(d), cl.KIND_NAMES[int(k)]) for g, d, k in zip(r.gid, r.duplicate_of, r.kind)}
    assert got == {2: (0, "near"), 1: (2, "exact"), 10: (20, "contained")}
    assert sorted(r.cluster_sizes.tolist()) == [3]


def test_every_removed_document_names_the_kept_one_at_the_end_of_its_chain():
    # 0 keeps; 1 is near 0; 2 is an exact copy of 1 (matched 1, which is removed): kept 0.
    # 10 ⊂ 20 ⊂ 30 (20 first in input order, so 10 matches 20, which is itself contained in 30): kept 30.
    edges = np.array([[0, 1], [1, 2], [10, 20], [10, 30], [20, 30]], dtype=np.uint64)
    kinds = np.array([cl.NEAR, cl.EXACT, cl.CONTAINED, cl.CONTAINED, cl.CONTAINED], dtype=np.int8)
    sims = np.array([0.9, 1.0, 0.95, 0.93, 0.97])
    orders = {0: [0, 0, 0], 1: [0, 0, 1], 2: [0, 0, 2], 10: [0, 0, 11], 20: [0, 0, 10], 30: [0, 0, 12]}
    exact = {0: [1, 1], 1: [2, 2], 2: [2, 2], 10: [3, 3], 20: [4, 4], 30: [5, 5]}
    sizes = {0: 100, 1: 100, 2: 100, 10: 50, 20: 200, 30: 400}
    r = cl.cluster(edges, kinds, sims, _info(orders, exact, sizes))
    got = {int(g): (int(m), int(k), cl.KIND_NAMES[int(c)]) for g, m, k, c in zip(r.gid, r.duplicate_of, r.kept, r.kind)}
    assert got == {1: (0, 0, "near"), 2: (1, 0, "exact"), 10: (20, 30, "contained"), 20: (30, 30, "contained")}
    assert not set(r.kept.tolist()) & set(r.gid.tolist())  # never a removed document


def test_components_match_a_plain_union_find():
    """The numpy hooking/pointer-jumping components against a Python union-find, on random graphs (chains,
    stars, isolated nodes, repeated and self edges), labels numbered by each component's smallest node."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        k = int(rng.integers(1, 200))
        edges = rng.integers(0, k, (int(rng.integers(0, 300)), 2))
        parent = list(range(k))

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b in edges.tolist():
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
        roots = [find(x) for x in range(k)]
        expected = np.unique(roots, return_inverse=True)[1]
        assert np.array_equal(cl.components(k, edges), expected)
    chain = np.stack([np.arange(9999), np.arange(1, 10000)], axis=1)[rng.permutation(9999)]
    assert (cl.components(10000, chain) == 0).all()


def test_minhash_signatures_do_not_depend_on_packing():
    """Short documents packed into one block, long ones in chunks: each row equals the document alone."""
    hasher = MinHasher(64, seed=3)
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 2**63, int(n), dtype=np.uint64) for n in (0, 1, 7, 900, 3000, 20000, 5, 2047)]
    packed = hasher.signatures(docs)
    for doc, row in zip(docs, packed):
        alone = hasher.signature(doc) if len(doc) else np.full(64, np.iinfo(np.uint32).max, np.uint32)
        assert np.array_equal(row, alone)
        if len(doc):  # the definition: min over shingles of a·x + b mod 2^32, x the top 32 bits of the hash
            x = (doc >> np.uint64(32)).astype(np.uint64)
            ref = ((x[:, None] * hasher.a.astype(np.uint64) + hasher.b.astype(np.uint64)) % (1 << 32)).min(axis=0)
            assert np.array_equal(row, ref.astype(np.uint32))


def test_containment_probes_and_exact_shared_counts():
    rng = np.random.default_rng(0)
    sample = np.unique(rng.integers(0, 2**63, 100, dtype=np.uint64))
    mask = probes(sample, 0.9, 16)
    assert HITS == 2 and mask.sum() == 100 - 90 + 2  # n - ceil(t n) + 2: any 90 of the 100 include two probes
    assert probes(sample[:10], 0.9, 16).sum() == 0  # fewer than min_samples: never the contained one
    assert probes(sample[:20], 0.9, 16).sum() == 20 - 18 + 2
    assert probes(sample[:3], 0.3, 1).sum() == 3  # capped at n: then only ceil(t n) = 1 shared probe is sure
    assert required_hits(np.array([100, 20, 3]), 0.3).tolist() == [2, 2, 1]
    # doc 0 (a probe on each of its two keys) inside doc 1; docs 2 and 3 share one key each with doc 0
    keys = np.array([5, 7, 5, 6, 7, 9, 7, 8, 5, 9], dtype=np.uint64)
    ids = np.array([0, 0, 1, 1, 1, 1, 2, 2, 3, 3], dtype=np.uint64)
    probe = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    o = np.lexsort((ids, keys))
    pairs, common = probe_pairs(keys[o], ids[o], probe[o], max_group=3)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 1), (0, 2), (0, 3)] and common.tolist() == []
    pairs, common = probe_pairs(keys[o], ids[o], probe[o], max_group=2)  # keys 5 and 7 (3 docs each): boilerplate
    assert pairs.tolist() == [] and sorted(common.tolist()) == [5, 7]
    doc_keys = np.array([5, 7, 5, 6, 7, 9, 7, 8], dtype=np.int64)  # docs 0, 1, 2 sorted per doc (as ranks)
    offsets = np.array([0, 2, 6, 8])
    idx = np.array([[0, 1], [0, 2], [2, 1], [1, 0]])
    boiler = np.zeros(8, dtype=bool)
    assert shared_counts(idx, doc_keys, offsets, boiler).tolist() == [2, 1, 1, 2]
    boiler[doc_keys == 7] = True
    assert shared_counts(idx, doc_keys, offsets, boiler).tolist() == [1, 0, 0, 1]


def test_frac_sample_is_a_subset_for_contained_text():
    story = random_text(3, 1500)
    big = random_text(4, 3000) + story + random_text(5, 2000)
    small, large = frac_sample(shingle_hashes(story, 5), 32), frac_sample(shingle_hashes(big, 5), 32)
    assert len(small) > 20 and np.isin(small, large).all()


def test_decontam_matches_long_ngrams_in_nested_json(tmp_path):
    passage = random_text(6, 80)
    p = write_jsonl(tmp_path / "eval.jsonl", [{"q": "短い", "ctx": {"paragraphs": [passage]}}])
    ev = load_eval_ngrams([str(p)], 50)
    assert ev.skipped_short == 1 and len(ev.hashes) == 31
    assert ev.match(shingle_hashes(random_text(7, 500) + passage[10:70], 50)) == "eval.jsonl:1"
    assert ev.match(shingle_hashes(random_text(7, 500) + passage[10:55], 50)) is None
    (tmp_path / "bad.jsonl").write_text('{"a": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_eval_ngrams([str(tmp_path / "bad.jsonl")], 50)


def test_outputs_refuse_truncated_corrupt_and_missing_files(tmp_path):
    arr = np.arange(600_000, dtype=np.uint64)  # 4.8 MB: several checksum blocks
    write_outputs(tmp_path, "x", "signatures", {"keys": arr}, docs={"ids": ["a"]}, stats={"docs": 1})
    out = Outputs(tmp_path, "x", "signatures")
    np.testing.assert_array_equal(out.take("keys", 10, 20), arr[10:20])
    np.testing.assert_array_equal(out.rows("keys", np.array([5, 599_999])), arr[[5, 599_999]])
    path = tmp_path / "x.keys.npy"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # same size, one byte flipped in the last block
    path.write_bytes(bytes(data))
    fresh = Outputs(tmp_path, "x", "signatures")
    np.testing.assert_array_equal(fresh.take("keys", 10, 20), arr[10:20])  # the first block is still good
    with pytest.raises(CorruptInput, match=r"x.keys.npy: corrupt: checksum .* phase 'signatures'"):
        fresh.take("keys", 599_990, 600_000)
    path.write_bytes(bytes(data[:1000]))
    with pytest.raises(CorruptInput, match=r"x.keys.npy: truncated .* 1000 bytes"):
        Outputs(tmp_path, "x", "signatures").array("keys")
    (tmp_path / "x.done.json").unlink()
    with pytest.raises(CorruptInput, match=r"x.done.json: missing: phase 'signatures' did not finish"):
        Outputs(tmp_path, "x", "signatures")


def test_sliced_outputs_check_only_the_small_blocks_a_slice_spans(tmp_path):
    """Files read by small slices (a bucket unit's key range of every shard) get FINE_BLOCK checksums: a slice
    reads and checks a few KiB, not a 1 MiB block; corruption inside the slice is still caught, and named."""
    arr = np.arange(600_000, dtype=np.uint64)
    marker = write_outputs(tmp_path, "x", "signatures", {"keys": arr, "other": arr}, fine=("keys",))
    assert marker["files"]["keys"]["block"] == FINE_BLOCK and marker["files"]["other"]["block"] == BLOCK
    assert len(marker["files"]["keys"]["blake2b"]) == -(-(tmp_path / "x.keys.npy").stat().st_size // FINE_BLOCK)
    path = tmp_path / "x.keys.npy"
    data = bytearray(path.read_bytes())
    data[FINE_BLOCK * 10 + 5] ^= 0xFF  # inside the 11th 4 KiB block only
    path.write_bytes(bytes(data))
    out = Outputs(tmp_path, "x", "signatures")
    row = (FINE_BLOCK * 10 - 128) // 8  # the header is 128 bytes: rows before it lie in blocks 0..9
    np.testing.assert_array_equal(out.take("keys", row - 100, row - 1), arr[row - 100:row - 1])
    assert out._checked["keys"] == {9}  # the one block the slice spans (the layout is in the marker)
    np.testing.assert_array_equal(out.take("keys", row + 520, row + 600), arr[row + 520:row + 600])
    with pytest.raises(CorruptInput, match=rf"x.keys.npy: corrupt: checksum of bytes {FINE_BLOCK * 10}\.\.{FINE_BLOCK * 11} "
                                           r".* phase 'signatures'"):
        out.take("keys", row, row + 10)
    with pytest.raises(CorruptInput, match=r"x.keys.npy: corrupt: checksum .* phase 'signatures'"):
        Outputs(tmp_path, "x", "signatures").rows("keys", np.array([row + 1]))
    # a unit finds its key range by binary search (np.searchsorted's answer), then takes it; 2-D rows as well
    grid = np.sort(np.random.default_rng(0).integers(0, 2**63, size=(3, 5000), dtype=np.uint64), axis=1)
    write_outputs(tmp_path, "y", "signatures", {"grid": grid, "flat": grid[1]}, fine=("grid", "flat"))
    out = Outputs(tmp_path, "y", "signatures")
    for lo, hi in [(grid[1, 100], grid[1, 4000]), (np.uint64(0), grid[1, 0]), (grid[1, 4999], None), (grid[1, 7], grid[1, 7])]:
        want = slice_sorted(grid[1], lo, hi)
        assert out.search("flat", lo, hi) == want == out.search("grid", lo, hi, row=1)
        np.testing.assert_array_equal(out.take("grid", want.start, want.stop, row=1), grid[1, want])
        np.testing.assert_array_equal(out.take("flat", want.start, want.stop), grid[1, want])
    np.testing.assert_array_equal(out.take("grid", 1, 3), grid[1:3])


def test_minhash_threads_give_the_same_signatures():
    """The permutations split among threads (each its own columns): the values do not depend on the split."""
    rng = np.random.default_rng(11)
    docs = [rng.integers(0, 2**63, int(n), dtype=np.uint64) for n in (0, 3, 40000, 900, 9000, 1, 2047, 30000)]
    one = MinHasher(200, seed=7, threads=1).signatures(docs)
    for threads in (2, 3, 200):
        assert np.array_equal(MinHasher(200, seed=7, threads=threads).signatures(docs), one)
    assert np.array_equal(MinHasher(200, seed=7, threads=2).signature(docs[2]), one[2])


def test_outputs_are_on_disk_before_the_marker_names_them(tmp_path, monkeypatch):
    """Every data file is fsynced before its rename, the folder after the renames, the marker last: a marker that
    survives a power loss never names a file whose bytes or name were still in the page cache."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_outputs(tmp_path, "x", "verify", {"edges": np.arange(10, dtype=np.uint64)}, docs={"ids": ["a"]})
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    marker_rename = next(i for i in renames if events[i][1].endswith("x.done.json"))
    for i in renames:
        if i == marker_rename:
            continue
        data = events[i][1]
        assert ("fsync", data + ".tmp") in events[:i], f"{data} renamed before its bytes were synced"
        assert ("fsync", str(tmp_path)) in events[i:marker_rename], f"{data}: folder not synced before the marker"
    assert len(renames) == 3 and renames[-1] == marker_rename  # two data files, then the marker
    assert events[-1] == ("fsync", str(tmp_path))  # the marker's rename is durable too
