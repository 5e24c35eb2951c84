"""The final shards' gzip writer: what either backend writes reads back with the standard library, byte for byte."""

import gzip

import pytest

from kamado.corpus.dedup.gzip_out import backend, open_gzip_writer


@pytest.mark.parametrize("use", ["zlib", "isal"])
def test_gzip_writer_output_reads_back_with_stdlib_gzip(tmp_path, use):
    if use == "isal" and backend() != "isal":
        pytest.skip("isal not installed: the zlib backend is what runs here")
    lines = [f'{{"id": "{i}", "text": "吾輩は猫である。名前はまだ無い。{i}"}}\n'.encode() * (1 + i % 7) for i in range(3000)]
    path = tmp_path / "shard.jsonl.gz"
    with open_gzip_writer(path, use=use) as out:
        for i in range(0, len(lines), 1024):
            out.write(b"".join(lines[i:i + 1024]))
    with gzip.open(path, "rb") as fh:
        assert fh.read() == b"".join(lines)
    assert path.stat().st_size < len(b"".join(lines)) / 3  # compressed, not stored
