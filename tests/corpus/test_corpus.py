"""Corpus stage: rules, PII masking, exact dedup after NFKC, and the invariant docs in = kept + dropped."""

import gzip
import json

import pytest

from kamado.corpus.filters import char_fractions
from kamado.corpus.normalize import normalize
from kamado.corpus.pii import mask_pii
from kamado.corpus.readers import BadRecord, read_jsonl
from kamado.recipe import load_recipe
from kamado.local import run_stages
from tests.helpers import write_jsonl

PROSE = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で泣いていた事だけは記憶している。"


def test_normalize_nfkc_and_whitespace():
    assert normalize("ＡＢＣ１２３　ｶﾀｶﾅ\r\n\n\n\n次の行  です\x07") == "ABC123 カタカナ\n\n次の行 です"


def _normalize_line_by_line(text: str, nfkc: bool) -> str:
    """normalize's whitespace rules as first written, one line at a time (the reference for the whole-text form)."""
    import re
    import unicodedata

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFKC", text) if nfkc else text
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]", "", text)
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip(" ") for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def test_normalize_whole_text_equals_line_by_line():
    import random

    pieces = [" ", "  ", "\t", "\u00a0", "\u3000", "\n", "\r", "\r\n", "あ", "a", "\x0b", "\u200b", "．", "ｱ", " \n "]
    rng = random.Random(16)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for nfkc in (False, True):
            assert normalize(text, nfkc) == _normalize_line_by_line(text, nfkc), repr(text)


def test_rules_switched_off_by_their_thresholds_are_skipped_with_the_same_verdicts():
    from kamado.corpus.filters import (CharacterClassFilter, DocContext, RepetitionFilter, SentenceLengthFilter,
                                       apply_filters, build_filters)
    from kamado.corpus.config import QualityRules

    off = QualityRules(min_chars=0, min_japanese_fraction=0, min_hiragana_fraction=0, max_katakana_fraction=1.0,
                       min_avg_sentence_length=0, max_avg_sentence_length=1e9, max_sentence_length=10**9,
                       max_duplicate_line_fraction=1.0, max_duplicate_paragraph_fraction=1.0,
                       max_duplicate_line_char_fraction=1.0, max_duplicate_paragraph_char_fraction=1.0)
    names = [f.name for f in build_filters(off)]
    assert "character_classes" not in names and "repetition" not in names
    texts = [PROSE, "カタカナカタカナ\nカタカナカタカナ\nカタカナカタカナ", "abc def", "。", " 。", "！？\n。", "x", "\n\n"]
    skipped = [CharacterClassFilter(0, 0, 1.0), RepetitionFilter(1.0, 1.0, 1.0, 1.0)]
    for text in texts:
        doc = {"text": text, "meta": {}}
        assert apply_filters(build_filters(off), doc) == apply_filters(build_filters(off) + skipped, doc), text
        # the sentence rule's shortcut (thresholds that cannot fire) against splitting into sentences:
        # a text without any sentence still drops as short_sentences
        expected = None if DocContext(doc).sentences else "short_sentences"
        assert SentenceLengthFilter(0, 1e9, 10**9).check(DocContext(doc)) == expected, text
    assert SentenceLengthFilter(0, 1e9, 10**9).check(DocContext({"text": "。！", "meta": {}})) == "short_sentences"


def test_char_fractions():
    f = char_fractions("ひらがなカタカナ漢字abc")
    assert f["hiragana"] == pytest.approx(4 / 13) and f["katakana"] == pytest.approx(4 / 13)
    assert f["japanese"] == pytest.approx(10 / 13)


def test_pii_masking():
    text, counts = mask_pii("連絡先は taro.yamada@example.jp または 03-1234-5678、携帯 090-1234-5678、〒123-4567 です。")
    assert "@" not in text and "1234" not in text
    assert counts == {"email": 1, "phone": 2, "postal_code": 1}
    assert mask_pii("西暦2024-05-01 の記事")[1] == {}  # a date is not a phone number


def test_bad_record_names_file_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1, "text": "よい"}\n{"id": 2, "body": "x"}\n', encoding="utf-8")
    with pytest.raises(BadRecord, match=r"bad.jsonl:2: field 'text'"):
        list(read_jsonl(str(p)))


def test_corpus_stage_counts_every_document(tmp_path):
    docs = [{"id": f"p{i}", "text": f"{PROSE}第{i}話。"} for i in range(20)]
    docs += [{"id": "dup-exact", "text": docs[0]["text"]}]
    docs += [{"id": "dup-width", "text": docs[1]["text"].replace("1", "１")}]  # equal after NFKC
    docs += [{"id": "short", "text": "短い。"}]
    docs += [{"id": "english", "text": "This page is written in English and has hardly any Japanese at all. " * 3}]
    docs += [{"id": "kanji-spam", "text": "格安 激安 通販 送料無料 最安値 人気 口コミ 比較 評判 " * 6}]
    docs += [{"id": "pii", "text": PROSE + "お問い合わせは info@example.com まで。"}]
    write_jsonl(tmp_path / "a.jsonl", docs[:13])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[13:])
    (tmp_path / "r.yaml").write_text(
        "name: t\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: 3\n  nfkc: true\n"  # dup-width: NFKC on
        # short test documents: Swallow's 400-character and 20-character-sentence minimums are switched down
        "  rules: {min_chars: 50, min_hiragana_fraction: 0.1, min_avg_sentence_length: 0}\n  sources:\n"
        "    - {name: a, paths: [a.jsonl]}\n    - {name: b, paths: ['*.jsonl.gz']}\n", encoding="utf-8")
    recipe = load_recipe(tmp_path / "r.yaml")
    run_stages(recipe, ["corpus"], log=lambda s: None)
    report = json.loads((tmp_path / "run/corpus/report.json").read_text())
    assert report["docs_in"] == len(docs) == report["docs_kept"] + sum(report["dropped"].values())
    assert report["dropped"] == {"exact_duplicate": 2, "too_short": 1, "low_japanese_fraction": 1, "low_hiragana_fraction": 1}
    assert report["pii_masked"] == {"email": 1}
    kept = {}
    for shard in sorted((tmp_path / "run/corpus/data").glob("shard-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            kept.update((d["id"], d) for d in map(json.loads, fh))
    assert len(kept) == report["docs_kept"] == len(docs) - 5
    assert "dup-exact" not in kept and "dup-width" not in kept and "p0" in kept and "p1" in kept
    assert "<EMAIL>" in kept["pii"]["text"]
    dups = json.loads((tmp_path / "run/corpus/duplicates.json").read_text())
    assert {d["id"]: d["duplicate_of"] for d in dups} == {"dup-exact": "p0", "dup-width": "p1"}


def _shard_independent(folder) -> dict:
    """What must not depend on the number of shards: the report (less its shard count, rejects-file list and
    phase timings), the kept documents, the duplicate list and the dropped samples."""
    from tests.corpus.corpus_helpers import kept_docs

    report = json.loads((folder / "report.json").read_text())
    for key in ("num_shards", "rejects_files"):
        report.pop(key)
    report["dedup"].pop("phases")
    return {"report": report, "kept": kept_docs(folder),
            "duplicates": sorted(json.loads((folder / "duplicates.json").read_text()), key=lambda d: d["id"]),
            "samples": json.loads((folder / "dropped_samples.json").read_text())}


def test_report_for_n_shards_equals_report_for_one_shard(tmp_path, monkeypatch):
    """Mixed inputs cut into tiny slices (every format's cut is used), near dedup on: 1, 4 and 17 shards give the
    same report, documents and duplicates (meta.order and "first in input order wins" do not move)."""
    import kamado.corpus.plan as plan
    from tests.corpus.corpus_helpers import run_corpus
    from tests.corpus.plan_helpers import write_mixed

    monkeypatch.setattr(plan, "DEFAULT_MAX_SLICE_BYTES", 700)
    monkeypatch.setattr(plan, "DEFAULT_MIN_SLICE_BYTES", 1)
    sources = write_mixed(tmp_path / "in")
    results = {}
    for n in (1, 4, 17):
        run_dir = tmp_path / f"n{n}"
        run_dir.mkdir()
        report = run_corpus(run_dir, sources, num_shards=n, extra="  dedup: {near: true}\n")
        slices = json.loads((run_dir / "run/corpus/work/plan.json").read_text())["slices"]
        assert (len(slices) > 12 or n == 1) and report["num_shards"] == n  # 12 inputs, cut when n > 1
        results[n] = _shard_independent(run_dir / "run/corpus")
    r = results[1]["report"]
    assert r["docs_in"] > 150 and r["dedup"]["exact_removed"] > 5 and r["rejected"]["invalid_json"] >= 3
    assert results[4] == results[1] and results[17] == results[1]


def test_a_source_folder_link_that_leaves_it_needs_follow_symlinks(tmp_path):
    from tests.corpus.corpus_helpers import prose, run_corpus

    (tmp_path / "src").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "src" / "a.txt").write_text(prose()[0], encoding="utf-8")
    (tmp_path / "elsewhere" / "b.txt").write_text(prose()[1], encoding="utf-8")
    (tmp_path / "src" / "b.txt").symlink_to(tmp_path / "elsewhere" / "b.txt")
    with pytest.raises(ValueError, match="b.txt is a link to .*set follow_symlinks: true"):
        run_corpus(tmp_path, "    - {name: t, paths: [src]}\n", num_shards=1)
    report = run_corpus(tmp_path, "    - {name: t, paths: [src], follow_symlinks: true}\n", num_shards=1)
    assert report["docs_in"] == 2


def test_filter_shard_zstd_round_trip_and_a_cut_file_raises(tmp_path):
    """Filter shards are zstd (write_filtered); the dedup phases read them with open_binary, which must raise
    on a file cut inside a frame rather than return fewer documents."""
    from kamado.corpus.dedup.layout import write_filtered
    from kamado.corpus.readers import open_binary

    path = tmp_path / "filtered-00000.jsonl.zst"
    rows = [{"id": f"d{i}", "text": PROSE * (i % 5 + 1), "meta": {"order": [0, 0, i]}} for i in range(2000)]
    with write_filtered(path) as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open_binary(str(path)) as fh:
        assert [json.loads(line) for line in fh] == rows
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EOFError), open_binary(str(path)) as fh:
        for _ in fh:
            pass
