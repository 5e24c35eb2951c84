"""Parquet files and Hugging Face datasets saved to disk, read batch by batch as Arrow (only one batch is ever
Python objects), whole or by row groups / row range."""

from __future__ import annotations

from typing import Iterator

from kamado.corpus.readers.records import DEFAULT_MAX_RECORD_BYTES, Location, Record, Rejected, make_doc

HF_BATCH_ROWS = 256


def _iter_rows(batches, path: str, text_field: str, id_field: str, source: str, url_field: str, html: str,
               max_record_bytes: int, first: int = 0) -> Iterator[Record]:
    row = first
    for batch in batches:
        for record in batch.to_pylist():
            row += 1
            loc = Location(path, row)
            text = record.get(text_field) if isinstance(record, dict) else None
            if isinstance(text, str) and len(text) > max_record_bytes // 4 and len(text.encode("utf-8")) > max_record_bytes:
                yield loc, Rejected("too_large", f"field '{text_field}' longer than {max_record_bytes:,} bytes")
                continue
            yield loc, make_doc(record, text_field, id_field, f"{path}:{row}", source, url_field, html)


def iter_parquet(path: str, text_field: str = "text", id_field: str = "id", source: str = "", url_field: str = "url",
                 html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, batch_size: int = 256,
                 row_groups: tuple[int, int] | None = None, first: int = 0) -> Iterator[Record]:
    """Rows of a Parquet file, or of row groups [a, b) (`first`: the rows in the groups before a)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        groups = list(range(*row_groups)) if row_groups is not None else None
        yield from _iter_rows(pf.iter_batches(batch_size=batch_size, row_groups=groups), path, text_field, id_field,
                              source, url_field, html, max_record_bytes, first)


def load_hf_disk(folder: str):
    """A `Dataset.save_to_disk` folder through `datasets` itself (its Arrow files are memory-mapped, not read)."""
    import datasets

    ds = datasets.load_from_disk(folder)
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(f"{folder}: a DatasetDict (splits {sorted(ds)}); name one split's folder as the source path")
    return ds


def iter_hf_disk(folder: str, text_field: str = "text", id_field: str = "id", source: str = "", url_field: str = "url",
                 html: str = "auto", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 rows: tuple[int, int] | None = None) -> Iterator[Record]:
    """Rows [a, b) (default: all) of a Hugging Face dataset folder, `HF_BATCH_ROWS` at a time as Arrow tables:
    only one batch is ever Python objects. Row numbers count from the dataset's first row."""
    ds = load_hf_disk(folder)
    a, b = rows if rows is not None else (0, ds.num_rows)
    part = ds.select(range(a, b)) if (a, b) != (0, ds.num_rows) else ds  # contiguous: a slice, no index map
    yield from _iter_rows(part.with_format("arrow").iter(batch_size=HF_BATCH_ROWS), folder, text_field, id_field,
                          source, url_field, html, max_record_bytes, a)
