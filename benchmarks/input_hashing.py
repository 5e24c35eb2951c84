"""What fingerprinting inputs costs (kamado/inputs.py): a cold hash of ../shared/data, the cached rerun (stat only),
and a sampled hash of a file above the 64 MiB threshold.

    python benchmarks/input_hashing.py [--big-mib 256]
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from pathlib import Path

from kamado.inputs import SAMPLE_ABOVE, InputHasher

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mib", type=int, default=256, help="size of the sampled file (> 64)")
    args = parser.parse_args()
    files = [f for f in glob.glob(str(DATA / "**" / "*"), recursive=True) if os.path.isfile(f)]
    size_mib = sum(os.path.getsize(f) for f in files) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hasher, start = InputHasher(work), time.perf_counter()
        for f in files:
            hasher.identity(f)
        hasher.save()
        cold = time.perf_counter() - start
        hasher, start = InputHasher(work), time.perf_counter()
        for f in files:
            hasher.identity(f)
        warm = time.perf_counter() - start
        print(f"{len(files)} files, {size_mib:.1f} MiB: cold {cold:.3f} s ({size_mib / cold:.0f} MiB/s), "
              f"cached rerun {warm * 1000:.1f} ms")
        big = work / "big.bin"
        with open(big, "wb") as fh:
            for _ in range(args.big_mib):
                fh.write(os.urandom(1 << 20))
        if big.stat().st_size <= SAMPLE_ABOVE:
            raise SystemExit(f"--big-mib must exceed the sampling threshold ({SAMPLE_ABOVE >> 20} MiB)")
        hasher, start = InputHasher(work), time.perf_counter()
        ident = hasher.identity(str(big))
        print(f"{args.big_mib} MiB file: sampled={ident.get('sampled', False)} in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
