"""Answer metrics for extractive QA in Japanese: exact match and character-level F1 (JGLUE's JSQuAD metric:
Japanese has no spaces, so F1 counts characters, not words), each the maximum over the accepted answers."""

from __future__ import annotations

import unicodedata
from collections import Counter

_STRIP = " \t\n\u3000「」『』。、.,"


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(text.split()).strip(_STRIP)


def exact_match(prediction: str, answers: list[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(a) for a in answers))


def char_f1(prediction: str, answers: list[str]) -> float:
    p = normalize_answer(prediction)
    best = 0.0
    for answer in answers:
        g = normalize_answer(answer)
        common = sum((Counter(p) & Counter(g)).values())
        if common == 0:
            continue
        precision, recall = common / len(p), common / len(g)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def extract_number(text: str) -> str | None:
    """The last number in a generated answer (MGSM's rule), commas removed, full-width digits folded by NFKC;
    "12.0" and "12" compare equal through `same_number`."""
    import re

    found = re.findall(r"-?\d+(?:\.\d+)?", unicodedata.normalize("NFKC", text).replace(",", ""))
    return found[-1] if found else None


def same_number(a: str | None, b: str) -> bool:
    return a is not None and abs(float(a) - float(b)) < 1e-6


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    vx = sum((a - mx) ** 2 for a in x) ** 0.5
    vy = sum((b - my) ** 2 for b in y) ** 0.5
    return cov / (vx * vy) if vx > 0 and vy > 0 else 0.0  # a constant prediction correlates with nothing


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties given their average rank (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    return pearson(_ranks(x), _ranks(y))
