"""A learned quality filter: logistic regression on hashed character n-grams (fastText-style, numpy only).

Trained to tell reference text (Wikipedia, Aozora, curated prose) from raw web text, as in GPT-3 / CCNet
quality filtering; its probability that a document "reads like the reference" is the `quality_model` rule's
score. Features are character 1–3-grams hashed into 2^18 buckets (no tokenizer, so it is fast and needs no
vocabulary), weighted log(1 + count) and L2-normalised. Why our own: one linear model is ~60 lines of numpy,
reproducible (fixed order, fixed seed) and needs no compiled extra (fastText) or large dependency (scikit-learn).

    python -m kamado.corpus.quality_model train --positive ref.jsonl.gz --negative web.jsonl.gz --out q.npz
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass

import numpy as np

_P = np.uint64(0x100000001B3)
_MAX_CHARS = 20_000  # the score reads the first 20k characters: plenty for a style judgement


def features(text: str, ngrams: tuple[int, ...], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse feature vector: (bucket indices, values)."""
    cp = np.frombuffer(text[:_MAX_CHARS].encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts = []
    h = cp
    with np.errstate(over="ignore"):
        for n in range(1, max(ngrams) + 1):
            if n > 1:
                if len(cp) < n:
                    break
                h = h[:-1] * _P + cp[n - 1:]
            if n in ngrams:
                parts.append((h * np.uint64(n * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF)) >> np.uint64(40))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx, counts = np.unique(np.concatenate(parts) % np.uint64(buckets), return_counts=True)
    val = np.log1p(counts).astype(np.float32)
    val /= max(float(np.linalg.norm(val)), 1e-8)
    return idx.astype(np.int64), val


@dataclass
class QualityModel:
    weights: np.ndarray
    bias: float
    ngrams: tuple[int, ...] = (1, 2, 3)
    info: dict | None = None

    @property
    def buckets(self) -> int:
        return len(self.weights)

    def score(self, text: str) -> float:
        idx, val = features(text, self.ngrams, self.buckets)
        z = float(self.weights[idx] @ val) + self.bias
        return float(1.0 / (1.0 + np.exp(-z)))

    def save(self, path: str) -> None:
        with open(path, "wb") as fh:  # a file handle: np.savez would append .npz to a path without it
            np.savez_compressed(fh, weights=self.weights, bias=np.float32(self.bias), ngrams=np.array(self.ngrams),
                                info=np.array(json.dumps(self.info or {}, ensure_ascii=False)))


def train(positive: list[str], negative: list[str], ngrams: tuple[int, ...] = (1, 2, 3), buckets: int = 1 << 18,
          epochs: int = 5, lr: float = 0.5, l2: float = 1e-6, seed: int = 0) -> QualityModel:
    """SGD on the logistic loss, classes balanced by weighting, in a fixed shuffled order (reproducible)."""
    rng = np.random.default_rng(seed)
    feats = [features(t, ngrams, buckets) for t in positive] + [features(t, ngrams, buckets) for t in negative]
    y = np.array([1.0] * len(positive) + [0.0] * len(negative))
    cw = {1.0: len(y) / (2 * max(len(positive), 1)), 0.0: len(y) / (2 * max(len(negative), 1))}
    w = np.zeros(buckets, np.float32)
    b = 0.0
    for epoch in range(epochs):
        step = lr / (1 + epoch)
        for i in rng.permutation(len(y)):
            idx, val = feats[i]
            p = 1.0 / (1.0 + np.exp(-(float(w[idx] @ val) + b)))
            g = (p - y[i]) * cw[y[i]]
            w[idx] -= step * (g * val + l2 * w[idx])
            b -= step * g
    return QualityModel(w, float(b), tuple(ngrams))


@functools.lru_cache(maxsize=4)
def load_model(path: str) -> QualityModel:
    """Loaded once per process per path (each shard worker shares it across its documents)."""
    with np.load(path) as z:
        return QualityModel(z["weights"].astype(np.float32), float(z["bias"]), tuple(int(n) for n in z["ngrams"]),
                            json.loads(str(z["info"])))


def evaluate(model: QualityModel, positive: list[str], negative: list[str], threshold: float = 0.5) -> dict:
    sp = np.array([model.score(t) for t in positive])
    sn = np.array([model.score(t) for t in negative])
    # AUC by ranks: the chance a random positive scores above a random negative
    auc = float(((sp[:, None] > sn[None, :]).mean() + 0.5 * (sp[:, None] == sn[None, :]).mean())) if len(sp) and len(sn) else float("nan")
    return {"accuracy": float(((sp >= threshold).sum() + (sn < threshold).sum()) / max(len(sp) + len(sn), 1)),
            "auc": auc, "positives": len(sp), "negatives": len(sn)}


def _read_texts(spec: str, limit: int) -> list[str]:
    """`path[:field]` → normalized texts (any reader format; HTML is extracted)."""
    from kamado.corpus.normalize import normalize
    from kamado.corpus.readers import Rejected, iter_source_file, source_files

    path, _, field = spec.partition("::")
    texts = []
    for f in source_files([path]):
        for _, doc in iter_source_file(f, "auto", field or "text", "id", "train"):
            if isinstance(doc, Rejected):
                continue
            texts.append(normalize(doc["text"]))
            if len(texts) >= limit:
                return texts
    return texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kamado.corpus.quality_model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on reference (positive) vs raw web (negative) text")
    t.add_argument("--positive", nargs="+", required=True, help="files or globs; PATH::FIELD picks the text field")
    t.add_argument("--negative", nargs="+", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--limit", type=int, default=20_000, help="documents per file list")
    t.add_argument("--holdout", type=float, default=0.1)
    t.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    pos = [x for s in args.positive for x in _read_texts(s, args.limit)]
    neg = [x for s in args.negative for x in _read_texts(s, args.limit)]
    rng = np.random.default_rng(0)
    rng.shuffle(pos)
    rng.shuffle(neg)
    kp, kn = int(len(pos) * args.holdout), int(len(neg) * args.holdout)
    model = train(pos[kp:], neg[kn:], epochs=args.epochs)
    held = evaluate(model, pos[:kp], neg[:kn])
    model.info = {"positive": args.positive, "negative": args.negative, "train_docs": [len(pos) - kp, len(neg) - kn],
                  "holdout": held}
    model.save(args.out)
    print(json.dumps({"out": args.out, **model.info}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
