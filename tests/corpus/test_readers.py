"""Readers: every format streams documents; encodings are detected; HTML becomes text; bad input is rejected."""

import gzip
import io
import json

import pytest

from kamado.corpus.html import decode_bytes, html_to_text
from kamado.corpus.readers import Rejected, iter_jsonl, iter_source_file, source_files
from tests.corpus.corpus_helpers import kept_docs, prose, rejects, run_corpus

SJIS_PAGE = ('<html><head><meta charset="Shift_JIS"><title>t</title></head><body><nav>ホーム | ログイン</nav>'
             '<article><p>{}</p><p>{}</p></article></body></html>')


def records(path, **kw):
    return list(iter_source_file(str(path), "auto", kw.pop("text_field", "text"), "id", "s", **kw))


def test_jsonl_gz_and_zst(tmp_path):
    import zstandard

    lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(prose()))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(lines)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode("utf-8")))
    for name in ("a.jsonl.gz", "a.jsonl.zst"):
        got = records(tmp_path / name)
        assert [d["text"] for _, d in got] == prose() and [loc.line for loc, _ in got] == list(range(1, 7))


def test_parquet_and_hf_saved_to_disk(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"doc": prose(), "key": [f"k{i}" for i in range(6)], "url": ["https://example.jp/"] * 6})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=2)
    got = records(tmp_path / "a.parquet", text_field="doc")
    assert [d["text"] for _, d in got] == prose() and got[0][1]["meta"]["url"] == "https://example.jp/"
    datasets = pytest.importorskip("datasets", reason="the `datasets` package (kamado[dev]) writes the test folder")
    datasets.Dataset.from_dict({"text": prose(), "id": list(range(6))}).save_to_disk(str(tmp_path / "hf"))
    files = source_files([str(tmp_path / "hf")])
    assert files == [str(tmp_path / "hf")]
    got = records(tmp_path / "hf")
    assert [d["text"] for _, d in got] == prose() and got[2][1]["id"] == "2"


def test_text_folder_detects_shift_jis_and_euc_jp(tmp_path):
    (tmp_path / "txt" / "sub").mkdir(parents=True)
    (tmp_path / "txt" / "a.txt").write_bytes(prose()[0].encode("cp932"))
    (tmp_path / "txt" / "sub" / "b.txt").write_bytes(prose()[1].encode("euc_jp"))
    (tmp_path / "txt" / "c.txt").write_bytes(prose()[2].encode("utf-8"))
    files = source_files([str(tmp_path / "txt")])
    assert len(files) == 3
    texts = {d["text"] for f in files for _, d in iter_source_file(f, "text", "text", "id", "s")}
    assert texts == set(prose()[:3])


def test_decode_bytes_declared_and_guessed():
    text = "日本語の文章を正しく読み取れるかどうかを確かめるための、少し長めの例文です。" * 3
    assert decode_bytes(text.encode("cp932"), "Shift_JIS") == (text, "cp932")
    assert decode_bytes(text.encode("euc_jp"))[0] == text  # no declaration: charset-normalizer's guess
    assert decode_bytes(text.encode("utf-8"))[0] == text


def test_html_extraction_keeps_the_article():
    html = SJIS_PAGE.format(prose()[0], prose()[1])
    text = html_to_text(html)
    assert prose()[0] in text and prose()[1] in text and "<p>" not in text


def _warc(path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        body = SJIS_PAGE.format(prose()[0], prose()[1]).encode("cp932")
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=Shift_JIS")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("https://example.jp/a", "response", payload=io.BytesIO(body), http_headers=http))
        w.write_record(w.create_warc_record("https://example.jp/a", "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
        w.write_record(w.create_warc_record("file:///doc/b.txt", "resource", payload=io.BytesIO(prose()[2].encode("euc_jp")),
                                            warc_content_type="text/plain"))
        http404 = StatusAndHeaders("404 Not Found", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("https://example.jp/gone", "response", payload=io.BytesIO(b"<html>x</html>"), http_headers=http404))
        png = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("https://example.jp/i.png", "response", payload=io.BytesIO(b"\x89PNG...."), http_headers=png))


def test_warc_response_and_resource_records(tmp_path):
    _warc(tmp_path / "a.warc.gz")
    got = records(tmp_path / "a.warc.gz")
    docs = [d for _, d in got if not isinstance(d, Rejected)]
    assert [type(d).__name__ for _, d in got] == ["dict", "dict", "Rejected", "Rejected"]  # request not counted
    assert prose()[0] in docs[0]["text"] and docs[0]["meta"]["url"] == "https://example.jp/a"
    assert docs[0]["meta"]["encoding"] == "cp932" and docs[1]["text"] == prose()[2]
    assert [d.reason for _, d in got if isinstance(d, Rejected)] == ["http_status", "not_text"]


def test_bad_input_is_rejected_with_file_and_line(tmp_path):
    good = [json.dumps({"id": f"g{i}", "text": t}, ensure_ascii=False).encode("utf-8") for i, t in enumerate(prose())]
    lines = [good[0], b'{"id": "broken", "text": ', good[1], b'{"id": "latin1", "text": "caf\xe9"}',
             b'{"id": "no-text", "body": "x"}', b'{"id": "empty", "text": "   "}', b'["not", "an", "object"]',
             json.dumps({"id": "huge", "text": "あ" * 2000}).encode(), good[2]]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # a truncated .gz: the first part of a valid stream, cut in the middle
    full = gzip.compress(b"\n".join(good[3:]) + b"\n" + b"\n".join(good[:3]) * 50 + b"\n")
    (tmp_path / "cut.jsonl.gz").write_bytes(full[: len(full) // 2])
    report = run_corpus(tmp_path, "    - {name: bad, paths: [bad.jsonl, cut.jsonl.gz]}\n", extra="  max_record_bytes: 4000\n"
                        "  exact_dedup: false\n")
    assert report["rejected"] == {"invalid_json": 1, "invalid_utf8": 1, "missing_text": 1, "empty": 1,
                                  "not_an_object": 1, "too_large": 1, "truncated_file": 1}
    rows = {r["reason"]: r for r in rejects(tmp_path / "run/corpus")}
    assert rows["invalid_json"]["line"] == 2 and rows["invalid_json"]["file"].endswith("bad.jsonl")
    assert rows["invalid_utf8"]["line"] == 4 and rows["missing_text"]["line"] == 5 and "'text'" in rows["missing_text"]["detail"]
    assert rows["too_large"]["line"] == 8 and rows["truncated_file"]["file"].endswith("cut.jsonl.gz")
    kept = kept_docs(tmp_path / "run/corpus")
    assert {"g0", "g1", "g2", "g3"} <= set(kept)  # the good records around the bad ones, and before the cut
    assert report["docs_in"] > 9


def test_strict_reader_still_raises(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": 1, "text": "よい"}\nnot json\n', encoding="utf-8")
    got = list(iter_jsonl(str(p)))
    assert isinstance(got[1][1], Rejected) and got[1][0].line == 2


def _warc_layouts(tmp_path):
    """The same 12 documents as a WARC written by warcio (gzip per record, and uncompressed), gzipped by us as one
    stream, and as a mix: per-record members followed by one member holding several records."""
    from tests.corpus.plan_helpers import docs, write_warc

    rows = docs("w", 12)
    write_warc(tmp_path / "per_record.warc.gz", rows, gz=True)
    write_warc(tmp_path / "plain.warc", rows, gz=False)
    plain = (tmp_path / "plain.warc").read_bytes()
    (tmp_path / "one_stream.warc.gz").write_bytes(gzip.compress(plain))
    starts = [i for i in range(len(plain)) if plain.startswith(b"WARC/1", i)]
    half = starts[len(starts) // 2]
    members = [gzip.compress(plain[a:b]) for a, b in zip(starts, starts[1:] + [len(plain)]) if a < half]
    (tmp_path / "mixed.warc.gz").write_bytes(b"".join(members) + gzip.compress(plain[half:]))
    return rows


def test_every_gzip_layout_of_a_warc_reads_every_record(tmp_path):
    rows = _warc_layouts(tmp_path)
    for name in ("per_record.warc.gz", "plain.warc", "one_stream.warc.gz", "mixed.warc.gz"):
        got = records(tmp_path / name)
        assert [d["meta"]["url"] for _, d in got] == [f"https://example.jp/{r['id']}" for r in rows], name
        assert [d["text"] for _, d in got] == [r["text"] for r in rows] and [loc.line for loc, _ in got] == list(range(1, 13))


def test_truncated_warc_keeps_records_before_the_cut_and_names_the_offset(tmp_path):
    _warc_layouts(tmp_path)
    for name in ("plain.warc", "per_record.warc.gz", "one_stream.warc.gz"):
        data = (tmp_path / name).read_bytes()
        whole = gzip.decompress(data) if name.endswith(".gz") else data  # offsets are in the uncompressed stream
        starts = [i for i in range(len(whole)) if whole.startswith(b"WARC/1", i)]
        for fraction in (0.3, 0.55, 0.8, 0.97):
            cut = tmp_path / f"cut-{name}"
            cut.write_bytes(data[: int(len(data) * fraction)])
            got = records(cut)
            kept = [d for _, d in got if not isinstance(d, Rejected)]
            rejected = [(loc, d) for loc, d in got if isinstance(d, Rejected)]
            assert len(rejected) == 1 and rejected[0][1].reason == "truncated_file", (name, fraction, rejected)
            loc, why = rejected[0]
            assert loc.line == len(kept) + 1 and why.offset in starts and f"byte {why.offset:,}" in why.detail
            assert len(kept) >= int(12 * fraction) - 3  # the records before the cut (a request may sit in between)


def test_a_corrupt_warc_record_is_not_called_truncated(tmp_path):
    _warc_layouts(tmp_path)
    plain = (tmp_path / "plain.warc").read_bytes()
    middle = plain.index(b"WARC/1", len(plain) // 2)
    (tmp_path / "bad.warc").write_bytes(plain[:middle] + b"XARC" + plain[middle + 4:])
    got = records(tmp_path / "bad.warc")
    assert got[-1][1].reason == "corrupt_file" and got[-1][1].offset == middle
    assert all(not isinstance(d, Rejected) for _, d in got[:-1]) and len(got) > 4


def test_html_parser_failure_is_its_own_reject_reason(tmp_path):
    from kamado.corpus.html import HtmlParseError

    with pytest.raises(HtmlParseError, match="Document is empty"):
        html_to_text("<!-- コメントだけ -->")  # nothing lxml can build a document from
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x", "text": "<!-- コメントだけ -->"}) + "\n"
                                      + json.dumps({"id": "y", "text": "<html><body></body></html>"}) + "\n")
    got = records(tmp_path / "a.jsonl", html="always")
    assert [d.reason for _, d in got] == ["html_parse_error", "empty"] and "lxml" in got[0][1].detail


def test_hf_folder_is_read_with_datasets_in_batches(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import kamado.corpus.readers.arrow as readers

    texts = [f"{prose()[i % 6]}{i}" for i in range(700)]
    datasets.Dataset.from_dict({"text": texts, "id": list(range(700))}).save_to_disk(str(tmp_path / "hf"),
                                                                                     max_shard_size="40KB")
    assert len(list((tmp_path / "hf").glob("*.arrow"))) > 1  # several Arrow files: rows still count from 1
    batches = []
    real = readers._iter_rows
    monkeypatch.setattr(readers, "_iter_rows", lambda b, *a: real((batches.append(len(x)) or x for x in b), *a))
    got = records(tmp_path / "hf")
    assert [d["text"] for _, d in got] == texts and [loc.line for loc, _ in got] == list(range(1, 701))
    assert max(batches) == readers.HF_BATCH_ROWS and sum(batches) == 700
    part = list(iter_source_file(str(tmp_path / "hf"), "hf", "text", "id", "s", part=("rows", 300, 450, 300)))
    assert [loc.line for loc, _ in part] == list(range(301, 451)) and part[0][1]["id"] == "300"


def test_truncated_zst_is_reported_not_silently_shortened(tmp_path):
    import zstandard

    lines = "".join(json.dumps({"id": i, "text": prose()[i % 6]}, ensure_ascii=False) + "\n" for i in range(300))
    whole = zstandard.ZstdCompressor().compress(lines.encode("utf-8"))
    (tmp_path / "cut.jsonl.zst").write_bytes(whole[: len(whole) * 2 // 3])
    got = records(tmp_path / "cut.jsonl.zst")
    assert isinstance(got[-1][1], Rejected) and got[-1][1].reason == "truncated_file"
    assert all(not isinstance(d, Rejected) for _, d in got[:-1])
