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
