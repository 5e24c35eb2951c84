"""The evaluation section: tasks run by the release stage and by `kamado eval`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


EVAL_TASKS = ("perplexity", "jcommonsenseqa", "jnli", "jsquad", "jmmlu", "mgsm", "jhumaneval", "niilc", "jsts")


@dataclass
class EvalTaskConfig:
    """One evaluation task. Names: EVAL_TASKS (see kamado/eval/: formats.py for the file formats)."""

    name: str = MISSING
    path: Optional[str] = None  # JSON/JSONL file; perplexity: None = the tokenizer stage's held-back documents
    shots: int = 0
    fewshot_path: Optional[str] = None  # where shot examples come from (None: the same file, never the item itself)
    limit: Optional[int] = None  # score the first `limit` items only
    template: Optional[str] = None  # str.format template of one item's prompt (None: the task's default)
    max_new_tokens: int = 32  # generation tasks (jsquad, niilc, mgsm, jhumaneval)
    timeout_s: float = 10.0  # jhumaneval: wall-clock limit per program in the sandbox
    memory_mb: int = 1024  # jhumaneval: address-space limit per program


@dataclass
class EvalConfig:
    """Evaluation run by the release stage (table in the model card) and by `kamado eval`."""

    enabled: bool = True
    tasks: list[EvalTaskConfig] = field(default_factory=lambda: [EvalTaskConfig(name="perplexity")])
    batch_size: int = 8
    max_length: Optional[int] = None  # tokens per forward pass (None: the model's max_position_embeddings)
    contamination_ngram: int = 20  # characters (NFKC, whitespace removed) shared with the training corpus
    seed: int = 1234
