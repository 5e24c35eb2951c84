"""A learned quality filter: a linear model on hashed character n-grams (fastText-style, numpy/scipy only).

Two ways to train it:

1. From human labels (the better signal, issue 17): JSONL with `text` and `label` (good/bad or 1/0).
   Features: character 1–3-grams hashed into 2^18 buckets plus a few rule scores (length, character-class
   fractions, Japanese punctuation rate, mean sentence length, zlib ratio; standardised). Learner: class-weighted
   kernel ridge on the linear kernel (n documents ≪ buckets, so it solves an n×n system; the weights are then
   written back into the buckets, so scoring costs one sparse dot product). The ridge strength is chosen by
   cross-validation; the printed balanced accuracy and AUC are nested cross-validation (the strength is chosen
   inside each training fold), so they are figures for snippets the model never saw. Scores are calibrated
   (Platt, class-balanced), so `min_quality_score: 0.5` is the balanced decision.
   What did not help on the shared mC4-ja labels (5-fold, 3 seeds): MeCab word 1–2-grams (fugashi + unidic-lite)
   alone 0.68, added to characters 0.69 (characters alone 0.70–0.71); character 4-grams ±0.00; 2–5-grams 0.63;
   logistic loss instead of ridge: the same, 10x slower; the rule scores move it by under 0.01 (kept, small).

       python -m kamado.corpus.quality_model train --labeled labels.jsonl.gz --out q.npz

2. Reference vs raw web (GPT-3 / CCNet style): trained to tell reference text (Wikipedia, Aozora, curated prose) from raw web text, as in GPT-3 / CCNet
quality filtering; its probability that a document "reads like the reference" is the `quality_model` rule's
score. Features are character 1–3-grams hashed into 2^18 buckets (no tokenizer, so it is fast and needs no
vocabulary), weighted log(1 + count) and L2-normalised. Why our own: one linear model is ~60 lines of numpy,
reproducible (fixed order, fixed seed) and needs no compiled extra (fastText) or large dependency (scikit-learn).

       python -m kamado.corpus.quality_model train --positive ref.jsonl.gz --negative web.jsonl.gz --out q.npz

   On one annotator's mC4-ja labels this agrees at balanced accuracy 0.50–0.54: the signal, not the learner, is
   the gap; prefer labels from the domain being filtered.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import zlib
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


_HIRA = re.compile(r"[\u3041-\u309f]")
_KATA = re.compile(r"[\u30a0-\u30ff]")
_KANJI = re.compile(r"[\u3400-\u9fff\uf900-\ufaff々]")
_LATIN = re.compile(r"[A-Za-zＡ-Ｚａ-ｚ]")
_DIGIT = re.compile(r"[0-9０-９]")
_JA_PUNCT = re.compile(r"[、。！？!?，．]")
_SYMBOL = re.compile(r"[^\w\s、。！？!?，．]")
_SENTENCE_END = re.compile(r"[。！？!?\n]")
RULE_FEATURES = ("log_chars", "hiragana", "katakana", "kanji", "latin", "digits", "ja_punctuation", "symbols",
                 "log_mean_sentence", "zlib_ratio", "lines_per_100")


def rule_features(text: str) -> np.ndarray:
    """A few document-level rule scores (the same measures as the rules in filters.py), unscaled."""
    text = text[:_MAX_CHARS]
    n = max(len(text), 1)
    raw = text.encode("utf-8")
    sents = [x for x in _SENTENCE_END.split(text) if x.strip()]
    mean_sentence = sum(map(len, sents)) / len(sents) if sents else 0.0
    return np.array([np.log(n), len(_HIRA.findall(text)) / n, len(_KATA.findall(text)) / n,
                      len(_KANJI.findall(text)) / n, len(_LATIN.findall(text)) / n, len(_DIGIT.findall(text)) / n,
                      len(_JA_PUNCT.findall(text)) / n, len(_SYMBOL.findall(text)) / n, np.log1p(mean_sentence),
                      len(zlib.compress(raw, 6)) / max(len(raw), 1), 100 * text.count("\n") / n], dtype=np.float64)


@dataclass
class QualityModel:
    weights: np.ndarray
    bias: float
    ngrams: tuple[int, ...] = (1, 2, 3)
    info: dict | None = None
    # optional parts of a model trained from labels: rule-feature weights over standardised rule scores, and
    # Platt calibration (p = sigmoid(a·z + b)); a reference-vs-web model has none of them
    rule_weights: np.ndarray | None = None
    rule_mean: np.ndarray | None = None
    rule_std: np.ndarray | None = None
    platt: tuple[float, float] = (1.0, 0.0)

    @property
    def buckets(self) -> int:
        return len(self.weights)

    def decision(self, text: str) -> float:
        idx, val = features(text, self.ngrams, self.buckets)
        z = float(self.weights[idx] @ val) + self.bias
        if self.rule_weights is not None:
            z += float(self.rule_weights @ ((rule_features(text) - self.rule_mean) / self.rule_std))
        return z

    def score(self, text: str) -> float:
        a, b = self.platt
        return float(1.0 / (1.0 + np.exp(-(a * self.decision(text) + b))))

    def save(self, path: str) -> None:
        extra = {}
        if self.rule_weights is not None:
            extra = dict(rule_weights=self.rule_weights, rule_mean=self.rule_mean, rule_std=self.rule_std)
        with open(path, "wb") as fh:  # a file handle: np.savez would append .npz to a path without it
            np.savez_compressed(fh, weights=self.weights, bias=np.float32(self.bias), ngrams=np.array(self.ngrams),
                                info=np.array(json.dumps(self.info or {}, ensure_ascii=False)),
                                platt=np.array(self.platt, dtype=np.float64), **extra)


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
        rules = {k: z[k] for k in ("rule_weights", "rule_mean", "rule_std") if k in z.files}
        platt = tuple(float(x) for x in z["platt"]) if "platt" in z.files else (1.0, 0.0)
        return QualityModel(z["weights"].astype(np.float32), float(z["bias"]), tuple(int(n) for n in z["ngrams"]),
                            json.loads(str(z["info"])), platt=platt, **rules)


def evaluate(model: QualityModel, positive: list[str], negative: list[str], threshold: float = 0.5) -> dict:
    sp = np.array([model.score(t) for t in positive])
    sn = np.array([model.score(t) for t in negative])
    # AUC by ranks: the chance a random positive scores above a random negative
    auc = float(((sp[:, None] > sn[None, :]).mean() + 0.5 * (sp[:, None] == sn[None, :]).mean())) if len(sp) and len(sn) else float("nan")
    return {"accuracy": float(((sp >= threshold).sum() + (sn < threshold).sum()) / max(len(sp) + len(sn), 1)),
            "auc": auc, "positives": len(sp), "negatives": len(sn)}


# ------------------------------------------------------------------ training from human labels
def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """The chance that a random positive scores above a random negative (ties count half), by ranks."""
    from scipy.stats import rankdata

    pos = int(y.sum())
    if pos == 0 or pos == len(y):
        return float("nan")
    r = rankdata(scores)
    return float((r[y == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos)))


def balanced_accuracy(scores: np.ndarray, y: np.ndarray, threshold: float = 0.0) -> float:
    pred = scores >= threshold
    return float(0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean()))


def _class_weights(y: np.ndarray) -> np.ndarray:
    n, pos = len(y), max(int(y.sum()), 1)
    return np.where(y == 1, n / (2 * pos), n / (2 * max(n - pos, 1)))


def _ridge(K: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Class-weighted kernel ridge on ±1 targets: minimise Σ c_i (f_i − t_i)² + λ αᵀKα with f = Kα, solved as
    (C K + λ I) α = C t. K already holds the +1 of a constant feature (the bias)."""
    c = _class_weights(y)
    return np.linalg.solve(c[:, None] * K + lam * np.eye(len(y)), c * (2 * y - 1))


def _fold_ids(y: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified folds: each class dealt round-robin in a shuffled order."""
    ids = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):
        where = rng.permutation(np.flatnonzero(y == cls))
        ids[where] = (np.arange(len(where)) + (cls * folds) // 2) % folds
    return ids


def _oof(K: np.ndarray, y: np.ndarray, lams: tuple[float, ...], fold: np.ndarray) -> dict[float, np.ndarray]:
    """Out-of-fold decision values for each ridge strength."""
    out = {lam: np.zeros(len(y)) for lam in lams}
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        for lam in lams:
            out[lam][te] = K[np.ix_(te, tr)] @ _ridge(K[np.ix_(tr, tr)], y[tr], lam)
    return out


def _best(scores: dict[float, np.ndarray], y: np.ndarray) -> float:
    return max(scores, key=lambda lam: auc(scores[lam], y))  # AUC: steadier than balanced accuracy on small folds


def _platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Class-balanced Platt scaling p = sigmoid(a z + b), fitted by Newton steps on out-of-fold decisions."""
    c = _class_weights(y)
    a, b = 1.0, 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        g = np.array([np.sum(c * (p - y) * z), np.sum(c * (p - y))])
        w = c * p * (1 - p)
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0)


def train_labeled(texts: list[str], labels: list[int], ngrams: tuple[int, ...] = (1, 2, 3), buckets: int = 1 << 18,
                  lams: tuple[float, ...] = LAMBDAS, rule_weight: float = 0.03, folds: int = 5,
                  seed: int = 0) -> tuple[QualityModel, dict]:
    """Fit on labelled texts (label 1 = good); return the model and its nested cross-validation figures.

    `rule_weight` scales the standardised rule scores against the unit-norm n-gram vector (0: n-grams only)."""
    import scipy.sparse as sp

    y = np.asarray(labels, dtype=np.float64)
    if len(y) < 2 * folds or y.min() == y.max():
        raise ValueError(f"train_labeled: need both labels and at least {2 * folds} texts (got {len(y)}, "
                         f"{int(y.sum())} good)")
    feats = [features(t, ngrams, buckets) for t in texts]
    X = sp.csr_matrix((np.concatenate([v for _, v in feats]), np.concatenate([i for i, _ in feats]),
                       np.cumsum([0] + [len(i) for i, _ in feats])), shape=(len(texts), buckets))
    R = np.array([rule_features(t) for t in texts])
    mean, std = R.mean(0), R.std(0) + 1e-9
    Rs = (R - mean) / std * np.sqrt(rule_weight)
    K = (X @ X.T).toarray() + Rs @ Rs.T + 1.0
    rng = np.random.default_rng(seed)
    # nested: the strength is chosen on each outer training part by an inner CV, then scored on the held-out fold
    outer = _fold_ids(y, folds, rng)
    nested = np.zeros(len(y))
    chosen = []
    for f in range(folds):
        tr, te = outer != f, outer == f
        inner = _oof(K[np.ix_(tr, tr)], y[tr], lams, _fold_ids(y[tr], folds - 1, rng))
        lam = _best(inner, y[tr])
        chosen.append(lam)
        nested[te] = K[np.ix_(te, tr)] @ _ridge(K[np.ix_(tr, tr)], y[tr], lam)
    # the final model: strength by a plain CV on everything, calibration on its out-of-fold decisions
    plain = _oof(K, y, lams, _fold_ids(y, folds, rng))
    lam = _best(plain, y)
    platt = _platt(plain[lam], y)
    alpha = _ridge(K, y, lam)
    weights = np.asarray(X.T @ alpha, dtype=np.float32).ravel()
    rule_weights = (Rs.T @ alpha) * np.sqrt(rule_weight)  # over standardised scores: (r − mean)/std
    report = {"balanced_accuracy": round(balanced_accuracy(nested, y), 4), "auc": round(auc(nested, y), 4),
              "folds": folds, "seed": seed, "docs": len(y), "good": int(y.sum()), "ridge": lam,
              "ridge_per_fold": chosen, "cv_by_ridge": {str(k): [round(balanced_accuracy(v, y), 4), round(auc(v, y), 4)]
                                                        for k, v in plain.items()},
              "ngrams": list(ngrams), "rule_weight": rule_weight, "rule_features": list(RULE_FEATURES)}
    model = QualityModel(weights, float(alpha.sum()), tuple(ngrams), report, rule_weights=rule_weights,
                         rule_mean=mean, rule_std=std, platt=platt)
    return model, report


def read_labeled(path: str, nfkc: bool) -> tuple[list[str], list[int]]:
    """JSONL(.gz) with `text` and `label` (good/bad, 1/0, true/false); a bad record is an error naming its line.
    Texts are normalized as the corpus stage normalizes them before the rule sees them."""
    from kamado.corpus.normalize import normalize
    from kamado.jsonl import iter_jsonl

    names = {"good": 1, "bad": 0, "1": 1, "0": 0, "true": 1, "false": 0}
    texts, labels = [], []
    for line_no, rec in iter_jsonl(path):  # a RecordError (a ValueError) names the file and line
        text, label = rec.get("text"), str(rec.get("label")).strip().lower()
        if not isinstance(text, str) or label not in names:
            raise ValueError(f"{path}:{line_no}: needs a string 'text' and a 'label' of good/bad or 1/0 "
                             f"(got label {rec.get('label')!r})")
        texts.append(normalize(text, nfkc=nfkc))
        labels.append(names[label])
    return texts, labels


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
    t = sub.add_parser("train", help="train from human labels (--labeled), or reference (positive) vs raw web (negative)")
    t.add_argument("--labeled", help="JSONL(.gz) with text and label (good/bad or 1/0)")
    t.add_argument("--positive", nargs="+", help="files or globs; PATH::FIELD picks the text field")
    t.add_argument("--negative", nargs="+")
    t.add_argument("--out", required=True)
    t.add_argument("--folds", type=int, default=5, help="--labeled: cross-validation folds")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--nfkc", action="store_true",
                   help="--labeled: NFKC the texts first (only if the corpus runs with corpus.nfkc: true)")
    t.add_argument("--limit", type=int, default=20_000, help="documents per file list")
    t.add_argument("--holdout", type=float, default=0.1)
    t.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    if args.labeled:
        try:
            texts, labels = read_labeled(args.labeled, args.nfkc)
            model, report = train_labeled(texts, labels, folds=args.folds, seed=args.seed)
        except (OSError, ValueError) as exc:
            print(f"quality_model: error: {exc}", file=sys.stderr)
            return 2
        model.info = {"labeled": args.labeled, "nfkc": args.nfkc, **report}
        model.save(args.out)
        print(f"cross-validated ({args.folds}-fold, nested) balanced accuracy {report['balanced_accuracy']:.3f}, "
              f"AUC {report['auc']:.3f} on {report['docs']} texts; ridge {report['ridge']}; saved {args.out}")
        print(json.dumps(model.info, ensure_ascii=False))
        return 0
    if not args.positive or not args.negative:
        ap.error("train needs --labeled FILE, or --positive and --negative")
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
