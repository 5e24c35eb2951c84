"""Benchmark 2 of issue 6: encoding throughput (tokens/s per core) of kamado's sharded encoder against Hugging Face
`datasets.map` with the same fast tokenizer (the tokenizer.json kamado exports), same run, same documents.

Both sides get one process and one thread (TOKENIZERS_PARALLELISM=false, num_proc=1), so the figure is per core.
kamado's time includes reading the gzip JSONL shard and writing the packed .bin shard; datasets' time is the
`map` call alone on an in-memory Dataset (its loading and saving are not counted). The ids are compared.

    python benchmarks/tokenizer_encode.py            # ~2 min
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's kamado, not another install
from tokenizer_common import load_sources, require_data  # noqa: E402

from kamado.tokenizer.config import TokenizerConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=6000, help="documents to encode")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32_000)
    args = ap.parse_args()
    require_data()
    import numpy as np
    from datasets import Dataset

    from kamado.tokenizer.encode import encode_corpus
    from kamado.tokenizer.export import export_hf, load_hf
    from kamado.tokenizer.train import train_sentencepiece, write_training_text

    data = load_sources()["train"]
    docs = [(src, t) for src, ds in data.items() for t in ds]
    docs = docs[:: max(1, len(docs) // args.docs)][: args.docs]
    with tempfile.TemporaryDirectory(prefix="kamado-encbench-") as tmp:
        tmp = Path(tmp)
        cfg = TokenizerConfig(vocab_size=args.vocab, input_sentence_size=50_000, max_piece_length=16, split_by_unicode_script=False)
        write_training_text(docs, tmp / "train.txt", cfg)
        model = train_sentencepiece(cfg, tmp / "train.txt", tmp / "spm")
        hf_dir = export_hf(model, tmp / "hf")
        shards = []
        for i in range(args.shards):
            p = tmp / f"shard-{i:05d}.jsonl.gz"
            with gzip.open(p, "wt", encoding="utf-8") as fh:
                for j, (_, text) in enumerate(docs[i :: args.shards]):
                    fh.write(json.dumps({"id": f"{i}-{j}", "text": text, "meta": {}}, ensure_ascii=False) + "\n")
            shards.append(p)
        chars = sum(len(t) for _, t in docs)

        runs = {}
        for workers in (1, 2):
            out = tmp / f"tokens{workers}"
            start = time.perf_counter()
            index = encode_corpus(model, shards, out, validation_fraction=0.0, workers=workers)
            runs[workers] = (time.perf_counter() - start, sum(s["tokens"] - s["docs"] for s in index["shards"]))

        # Hugging Face datasets.map with the same fast tokenizer, one process
        tok = load_hf(hf_dir)
        texts = [json.loads(line)["text"] for p in shards for line in gzip.open(p, "rt", encoding="utf-8")]
        ds = Dataset.from_dict({"text": texts})
        start = time.perf_counter()
        mapped = ds.map(lambda b: {"input_ids": tok(b["text"], add_special_tokens=False)["input_ids"]},
                        batched=True, batch_size=512, num_proc=1, remove_columns=["text"], load_from_cache_file=False)
        hf_s = time.perf_counter() - start
        hf_tokens = sum(len(x) for x in mapped["input_ids"])

        # same ids: kamado's packed shard 0 (EOS-separated) against datasets' ids of the same documents
        arr = np.fromfile(tmp / "tokens1" / "train-00000.bin", dtype=np.uint16)
        n0 = sum(1 for _ in gzip.open(shards[0], "rt"))
        same = np.split(arr, np.flatnonzero(arr == 2) + 1)[:-1]
        agree = all(a[:-1].tolist() == b for a, b in zip(same, mapped["input_ids"][:n0]))

    k1_s, k_tokens = runs[1]
    k2_s, _ = runs[2]
    print(f"documents: {len(docs):,}, characters: {chars:,}, tokens: {k_tokens:,} (datasets: {hf_tokens:,}); "
          f"ids identical on shard 0: {agree}; machine: {os.cpu_count()} cores (shared)")
    print("\n| encoder | processes | seconds | tokens/s | tokens/s per core | ratio vs datasets.map per core |")
    print("|---|---|---|---|---|---|")
    hf_rate = hf_tokens / hf_s
    print(f"| HF datasets.map, fast tokenizer | 1 | {hf_s:.2f} | {hf_rate:,.0f} | {hf_rate:,.0f} | 1.00 |")
    for w, (s, _) in runs.items():
        rate = k_tokens / s
        print(f"| kamado encode_corpus (SentencePiece) | {w} | {s:.2f} | {rate:,.0f} | {rate / w:,.0f} | {rate / w / hf_rate:.2f} |")


if __name__ == "__main__":
    main()
