"""Opening corpus inputs: plain, .gz and .zst files streamed (whole, or one planned byte range), the format a path
has, and the files a source's paths, folders and globs name.

A compressed stream cut short or corrupt raises one of `TRUNCATED` mid-read; `stream_broken` turns that into
the `Rejected` a reader yields for the lost tail (a cut is `truncated_file`, wrong bytes `corrupt_file`)."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import IO

from kamado.corpus.readers.records import Rejected


try:  # ISA-L's igzip reads .gz twice as fast as the standard library (same API, same errors but its own zlib.error)
    from isal import igzip as _gzip_reader
    from isal.isal_zlib import error as _isal_error
except ImportError:  # a platform without an isal wheel
    _gzip_reader, _isal_error = gzip, zlib.error


def _truncation_errors() -> tuple:
    import zstandard

    return (EOFError, gzip.BadGzipFile, zlib.error, _isal_error, zstandard.ZstdError)


TRUNCATED = _truncation_errors()  # what a cut .gz / .zst raises mid-stream (EOFError: _ZstdStream's too)


def is_cut(exc: BaseException | None) -> bool:
    """A compressed stream that ends early (truncated), not one with wrong bytes (corrupt). gzip raises EOFError
    for a cut inside a member, and BadGzipFile for a cut after the first byte of the next member's magic."""
    return isinstance(exc, EOFError) or (isinstance(exc, gzip.BadGzipFile) and str(exc).endswith("(b'\\x1f')"))


def stream_broken(exc: BaseException) -> Rejected:
    if is_cut(exc):
        return Rejected("truncated_file", f"compressed stream ends early ({exc})")
    return Rejected("corrupt_file", f"compressed stream is corrupt ({type(exc).__name__}: {exc})")


# ------------------------------------------------------------------ opening files
class _Span(io.RawIOBase):
    """Bytes [start, end) of a file as a stream that ends at `end` (one planned slice)."""

    def __init__(self, path: str, start: int, end: int):
        self._fh = open(path, "rb")
        self._fh.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        got = self._fh.readinto(memoryview(buf)[:n])
        self._left -= got
        return got

    def close(self) -> None:
        self._fh.close()
        super().close()


class _ZstdStream(io.RawIOBase):
    """Decompressed bytes of every zstd frame in a stream. Unlike zstandard's stream_reader, a stream that ends
    inside a frame raises EOFError (a truncated file is reported, not silently shortened)."""

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._raw, self._dctx = raw, zstandard.ZstdDecompressor()
        self._obj, self._pending, self._in_frame = self._dctx.decompressobj(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 17)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame")
                return 0
            while chunk:
                self._in_frame = True
                self._pending += self._obj.decompress(chunk)
                chunk = b""
                if self._obj.eof:  # frame done: the rest of the chunk starts the next one
                    chunk, self._in_frame = self._obj.unused_data, False
                    self._obj = self._dctx.decompressobj()
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_text(path: str) -> IO[str]:
    """Open plain, .gz or .zst text for streaming reads."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8")


def open_binary(path: str, span: tuple[int, int] | None = None) -> IO[bytes]:
    """A whole file (.gz and .zst decompressed), or bytes [start, end) of it: a slice of an uncompressed file, or
    of a .zst whose frames start at `start` and end at `end`. A .gz is only ever read whole."""
    if span is None:
        raw: IO[bytes] = open(path, "rb")
    elif path.endswith(".gz"):
        raise ValueError(f"{path}: a .gz file is read whole, not as a byte range")
    else:
        raw = io.BufferedReader(_Span(path, *span), 1 << 20)
    if path.endswith(".gz"):
        if _gzip_reader is gzip:
            return gzip.open(raw, "rb")
        raw.close()
        return io.BufferedReader(_FastGzip(path), 1 << 20)
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdStream(raw), 1 << 20)  # buffered: readline
    return raw


class _FastGzip(io.RawIOBase):
    """A .gz read with ISA-L's igzip; at the first error it reads on with the standard library from the same
    decompressed offset. igzip decodes in larger blocks and, on a file cut short, drops the last block before the
    cut that gzip still delivers: the reader keeps every record before a cut either way (tests/corpus/test_readers)."""

    def __init__(self, path: str):
        self.path, self.pos = path, 0
        self.stream = _gzip_reader.open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if isinstance(self.stream, _gzip_reader.IGzipFile):
            try:
                n = self.stream.readinto(buffer)
                self.pos += n
                return n
            except TRUNCATED:
                self.stream.close()
                self.stream = gzip.open(self.path, "rb")
                self.stream.seek(self.pos)  # forward reads to where igzip stopped; gzip raises at the cut itself
        data = self.stream.read1(min(len(buffer), io.DEFAULT_BUFFER_SIZE))  # small steps, as gzip's line reader
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def detect_format(path: str) -> str:
    p = path.lower()
    if os.path.isdir(path):
        return "hf" if (Path(path) / "state.json").is_file() else "text"
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".warc", ".warc.gz", ".arc.gz")):
        return "warc"
    if p.endswith((".txt", ".txt.gz", ".txt.zst")):
        return "text"
    return "jsonl"


class SymlinkOutsideSource(ValueError):
    """A file under a source folder or glob resolves outside it (refused unless `follow_symlinks: true`)."""


def _static_root(pattern: str) -> str:
    """The folder a glob cannot leave: its path up to the first component with a wildcard."""
    import glob

    parts = Path(pattern).parts
    fixed = next((parts[:i] for i, part in enumerate(parts) if glob.has_magic(part)), parts)
    return str(Path(*fixed)) if fixed else "."


def _check_inside(path: str, root: str, follow_symlinks: bool) -> None:
    if follow_symlinks:
        return
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise SymlinkOutsideSource(f"{path} is a link to {real}, outside the source root {root}; set "
                                   f"follow_symlinks: true on the source to read it")


def source_files(paths: list[str], fmt: str = "auto", follow_symlinks: bool = False) -> list[str]:
    """Files or globs (and folders: an HF dataset, or a folder of text files) → the inputs, in a stable order.

    A file named explicitly is read wherever it points. Files found under a folder or by a glob must stay inside
    it (the folder, or the glob's fixed prefix) after links are resolved, and linked folders are not walked,
    unless `follow_symlinks`: a link must not quietly pull data from elsewhere into a corpus."""
    import glob

    out: list[str] = []
    for pattern in paths:
        magic = glob.has_magic(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if magic else [pattern]
        for m in matches:
            if os.path.isfile(m):
                if magic:
                    _check_inside(m, _static_root(pattern), follow_symlinks)
                out.append(m)
            elif os.path.isdir(m):
                if magic:
                    _check_inside(m, _static_root(pattern), follow_symlinks)
                if (fmt in ("auto", "hf")) and (Path(m) / "state.json").is_file():
                    out.append(m)
                    continue
                found = []  # a plain-text folder: every file under it
                for folder, _, names in os.walk(m, followlinks=follow_symlinks):
                    for name in names:
                        f = os.path.join(folder, name)
                        if os.path.isfile(f):
                            if os.path.islink(f):  # linked folders are not walked: only a linked file can leave
                                _check_inside(f, m, follow_symlinks)
                            found.append(str(Path(f)))
                out.extend(sorted(found))
    return out
