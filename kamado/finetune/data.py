"""Instruction and preference records: reading with clear errors, the Japanese prompt template, and
tokenization with the loss mask (only assistant tokens are scored).

Records are instruction/input/output (dolly-ja / Alpaca style) or `messages` lists (system?, user, assistant,
user, assistant, ...). Both become messages and are rendered with the chat template the tokenizer stage stores
with the tokenizer (kamado/tokenizer/chat_template.py `alpaca_ja`, whose `render_segments` gives the same text
as segments; a test checks they give the same text and the same ids).

Tokenization is per segment (template text, assistant text, BOS/EOS ids), never of the whole rendered string,
so the scored tokens are exactly what the model emits after the generation prompt at inference time: the
SentencePiece "in and out of context" trap (TRL #598) cannot shift the mask. With the tokenizer's "\n" piece
split out first, the segment ids equal the whole-text ids too (tested).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kamado.jsonl import RecordError, iter_jsonl, need
# The chat format is defined once, with the tokenizer; re-exported for the fine-tuning stages and tests.
from kamado.tokenizer.chat_template import (ASSISTANT_HEADER, BOS, EOS, format_prompt, render_segments,  # noqa: F401
                                           rendered_text)


class BadRecord(RecordError):
    pass


@dataclass
class Rejected:
    """Records not used, by reason: counted and reported, never silently lost. `where` keeps the `file:line` of
    the first MAX_WHERE rejected (or truncated) records of each reason, so a user can find them."""

    counts: dict[str, int] = field(default_factory=dict)
    truncated: int = 0  # used, but cut to the sequence length (kept records, so not in `counts`)
    where: dict[str, list[str]] = field(default_factory=dict)

    MAX_WHERE = 20

    def add(self, reason: str, where: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self._note(reason, where)

    def add_truncated(self, where: str = "") -> None:
        self.truncated += 1
        self._note("truncated", where)

    def _note(self, reason: str, where: str) -> None:
        seen = self.where.setdefault(reason, [])
        if where and len(seen) < self.MAX_WHERE:
            seen.append(where)


def read_records(paths: list[str], required: tuple[str, ...] = ()) -> list[tuple[str, int, dict]]:
    """(file, line, record) of every record; a line that is not a JSON object, or lacks a `required` string
    field, raises BadRecord naming file, line and field."""
    out = []
    for path in paths:
        for line_no, rec in iter_jsonl(path, BadRecord):
            for key in required:
                need(rec, key, str, f"{path}:{line_no}", BadRecord)
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
    report = {"used": used, "rejected": rejected.counts, "truncated": rejected.truncated, "where": rejected.where}
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2))


# ------------------------------------------------------------------ conversations
def record_messages(rec: dict, where: str) -> list[dict]:
    """A record as a conversation: `messages` as given (checked), or instruction/input/output as one exchange.
    Structural errors raise BadRecord naming `where` (file:line) and the field."""
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise BadRecord(f"{where}: field 'messages' must be a non-empty list")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise BadRecord(f"{where}: field 'messages[{j}]' needs string 'role' and 'content'")
        body = msgs[1:] if msgs[0]["role"] == "system" else msgs
        for j, m in enumerate(body):
            want = "user" if j % 2 == 0 else "assistant"
            if m["role"] != want:
                k = j + (len(msgs) - len(body))
                raise BadRecord(f"{where}: field 'messages[{k}].role' is {m['role']!r}, expected {want!r} "
                                "(an optional system message, then user and assistant turns in turn)")
        return msgs
    for key in ("instruction", "output"):
        if not isinstance(rec.get(key), str):
            raise BadRecord(f"{where}: field '{key}' missing or not a string")
    if rec.get("input") is not None and not isinstance(rec["input"], str):
        raise BadRecord(f"{where}: field 'input' must be a string")
    user = {"role": "user", "content": rec["instruction"]}
    if (rec.get("input") or "").strip():
        user["input"] = rec["input"]
    return [user, {"role": "assistant", "content": rec["output"]}]


def encode_conversation(tokenizer, messages: list[dict], max_len: int) -> tuple[list[int], list[int], bool] | None:
    """[bos] system (user assistant)+ → (input_ids, labels, truncated), labels shifted for next-token loss and -100
    except where the target is an assistant token (its EOS included). Truncation rule: keep the first max_len+1
    tokens (later turns are cut); None when no assistant token is left within them."""
    ids: list[int] = []
    scored: list[bool] = []
    for seg, is_scored in render_segments(messages):
        if seg is BOS:
            piece = [tokenizer.bos_token_id]
        elif seg is EOS:
            piece = [tokenizer.eos_token_id]
        else:
            piece = tokenizer(seg, add_special_tokens=False)["input_ids"]
        ids += piece
        scored += [is_scored] * len(piece)
    truncated = len(ids) > max_len + 1
    ids, scored = ids[: max_len + 1], scored[: max_len + 1]
    if not any(scored[1:]):
        return None
    return ids[:-1], [t if s else -100 for t, s in zip(ids[1:], scored[1:])], truncated


# ------------------------------------------------------------------ packing
def pack_rows(rows: list[tuple[list[int], list[int]]], seq_len: int) -> list[list[tuple[list[int], list[int]]]]:
    """Greedy in-order packing: examples are appended to the current row while they fit in seq_len tokens.
    Deterministic (the order is the file's), so a resumed run packs identically."""
    packs: list[list[tuple[list[int], list[int]]]] = []
    used = seq_len + 1
    for row in rows:
        if used + len(row[0]) > seq_len:
            packs.append([])
            used = 0
        packs[-1].append(row)
        used += len(row[0])
    return packs


def packed_batch(packs: list[list[tuple[list[int], list[int]]]], pad_id: int) -> dict:
    """Packed rows with position ids restarting at 0 per example and no attention mask: transformers then builds a
    block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices), so examples
    in one row never attend to each other. `attention_mask` is kept only to count real tokens (the loss pops it)."""
    width = max(sum(len(x) for x, _ in p) for p in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(packs), width), -100, dtype=torch.long)
    pos = torch.zeros((len(packs), width), dtype=torch.long)
    real = torch.zeros((len(packs), width), dtype=torch.long)
    for i, pack in enumerate(packs):
        at = 0
        for x, y in pack:
            n = len(x)
            ids[i, at : at + n], labels[i, at : at + n] = torch.tensor(x), torch.tensor(y)
            pos[i, at : at + n] = torch.arange(n)
            real[i, at : at + n] = 1
            at += n
        pos[i, at:] = torch.arange(width - at)  # padding: one more "example", never scored
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": real, "packed": torch.tensor(1)}
