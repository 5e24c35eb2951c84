"""Mixed corpus inputs for the shard-plan tests: every format and layout a plan can cut (or must keep whole)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from tests.corpus.corpus_helpers import prose


def docs(prefix: str, n: int, long_every: int = 7) -> list[dict]:
    """Distinct Japanese documents (multibyte text; every `long_every`-th one a long line) plus near copies."""
    base = prose()
    out = []
    for i in range(n):
        text = f"{base[i % len(base)]}第{i}節。{prefix}の記録では、{i * 7 % 13}回目の集まりについて書いた。"
        if i % long_every == 3:
            text = text * 40  # a line of several kilobytes: slices must not cut it
        if i % 11 == 5 and out:
            text = out[-2 if len(out) > 1 else -1]["text"]  # an exact copy of an earlier document
        out.append({"id": f"{prefix}{i}", "text": text})
    return out


def jsonl_bytes(rows: list[dict]) -> bytes:
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows]
    lines.insert(4, b"")  # a blank line (counted as a line, holds no record)
    lines.insert(9, b'{"id": "broken", "text": ')  # a bad record: rejected with its line
    return b"\n".join(lines) + b"\n"


def write_warc(path: Path, rows: list[dict], gz: bool) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record(path.name, {"software": "kamado tests"}))
    for i, r in enumerate(rows):
        h = StatusAndHeaders("200 OK", [("Content-Type", "text/plain; charset=utf-8")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(f"https://example.jp/{r['id']}", "response",
                                            payload=io.BytesIO(r["text"].encode("utf-8")), http_headers=h))
        if i % 4 == 1:  # a request record between responses: not a document, not counted
            w.write_record(w.create_warc_record(f"https://example.jp/{r['id']}", "request", payload=io.BytesIO(b"GET /")))
    path.write_bytes(buf.getvalue())


def write_mixed(root: Path) -> str:
    """Write every kind of input under `root`; return the recipe's `sources:` block for them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    root.mkdir(parents=True, exist_ok=True)
    (root / "plain.jsonl").write_bytes(jsonl_bytes(docs("p", 40)))
    (root / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(docs("g", 12))))
    # .zst in frames of 5 lines, plus one frame boundary in the middle of a line (no cut may be made there)
    lines = jsonl_bytes(docs("z", 30)).splitlines(keepends=True)
    blocks = [b"".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    blocks[2], blocks[3] = blocks[2] + blocks[3][:10], blocks[3][10:]
    (root / "c.jsonl.zst").write_bytes(b"".join(zstandard.ZstdCompressor().compress(b) for b in blocks))
    rows = docs("q", 24)
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "id": [r["id"] for r in rows]}),
                   root / "d.parquet", row_group_size=3)
    write_warc(root / "e.warc", docs("w", 20), gz=False)
    write_warc(root / "f.warc.gz", docs("v", 8), gz=True)
    (root / "txt" / "sub").mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(docs("t", 5)):
        (root / "txt" / ("sub" if i % 2 else "") / f"{i}.txt").write_text(r["text"], encoding="utf-8")
    import datasets

    rows = docs("h", 18)
    datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "id": [r["id"] for r in rows]}) \
        .save_to_disk(str(root / "hf"))
    return (f"    - {{name: lines, paths: ['{root}/plain.jsonl', '{root}/*.jsonl.gz', '{root}/c.jsonl.zst']}}\n"
            f"    - {{name: tables, paths: ['{root}/d.parquet', '{root}/hf']}}\n"
            f"    - {{name: crawl, paths: ['{root}/e.warc', '{root}/f.warc.gz']}}\n"
            f"    - {{name: texts, paths: ['{root}/txt']}}\n")
