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
