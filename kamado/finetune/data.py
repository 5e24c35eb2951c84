"""Instruction and preference records: reading with clear errors, the Japanese prompt template, and
tokenization with the loss mask (prompt tokens are never scored)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kamado.corpus.readers import open_text

# The Japanese Alpaca-style template used by llm-jp-sft and many Japanese instruction sets.
PROMPT = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。\n\n### 指示:\n{instruction}\n\n### 応答:\n"
PROMPT_WITH_INPUT = (
    "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
    "### 指示:\n{instruction}\n\n### 入力:\n{input}\n\n### 応答:\n"
)


def format_prompt(instruction: str, input_text: str = "") -> str:
    if input_text.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input_text)
    return PROMPT.format(instruction=instruction)


class BadRecord(ValueError):
    pass


@dataclass
class Rejected:
    """Records not used, by reason: counted and reported, never silently lost."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


def read_records(paths: list[str], required: tuple[str, ...]) -> list[tuple[str, int, dict]]:
    out = []
    for path in paths:
        with open_text(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadRecord(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
                for key in required:
                    if not isinstance(rec.get(key), str):
                        raise BadRecord(f"{path}:{line_no}: field '{key}' missing or not a string")
                out.append((path, line_no, rec))
    return out


def encode_example(tokenizer, prompt: str, response: str, max_len: int) -> tuple[list[int], list[int]] | None:
    """[bos] prompt response [eos] → (input_ids, labels), already shifted for next-token loss; prompt positions
    are -100. Prompt and response are encoded separately so the boundary is exact (no dummy prefix in our
    SentencePiece model, so the pieces are what the template gives). None when the prompt leaves no room."""
    p = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[: max_len + 1]
    if len(p) >= len(ids):
        return None
    scored = [False] * len(p) + [True] * (len(ids) - len(p))
    inputs, labels = ids[:-1], [t if s else -100 for t, s in zip(ids[1:], scored[1:])]
    return inputs, labels


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def is_held_back(i: int, fraction: float) -> bool:
    """Every k-th record goes to validation (deterministic, spread over the file)."""
    if fraction <= 0:
        return False
    k = max(2, round(1 / fraction))
    return i % k == k - 1


def write_rejections(path: Path, rejected: Rejected, used: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"used": used, "rejected": rejected.counts}, ensure_ascii=False, indent=2))
