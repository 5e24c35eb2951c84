"""The evaluation section: tasks run by the release stage and by `kamado eval`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional


from kamado.config import REQUIRED, ConfigError, marked_paths, path_field


EVAL_TASKS = ("perplexity", "jcommonsenseqa", "jnli", "jsquad", "jmmlu", "mgsm", "jhumaneval", "niilc", "jsts")


@dataclass
class EvalTaskConfig:
    """One evaluation task. Names: EVAL_TASKS (see kamado/eval/: formats.py for the file formats)."""

    # A str checked by validate() rather than an enum: `kamado eval --task NAME=PATH` builds tasks in code too.
    name: str = REQUIRED
    path: Optional[str] = path_field()  # JSON/JSONL file; perplexity: None = the tokenizer stage's held-back documents
    shots: int = 0
    fewshot_path: Optional[str] = path_field()  # where shot examples come from (None: the same file, never the item itself)
    limit: Optional[int] = None  # score the first `limit` items only
    template: Optional[str] = None  # str.format template of one item's prompt (None: the task's default)
    max_new_tokens: int = 32  # generation tasks (jsquad, niilc, mgsm, jhumaneval)
    timeout_s: float = 10.0  # jhumaneval: wall-clock limit per program in the sandbox
    memory_mb: int = 1024  # jhumaneval: address-space limit per program

    def validate(self, key: str) -> None:
        if self.name not in EVAL_TASKS:
            raise ConfigError(f"{key}.name", f"unknown task {self.name!r} (known: {', '.join(EVAL_TASKS)})")
        if self.name != "perplexity" and not self.path:
            raise ConfigError(f"{key}.path", f"task {self.name} needs a data file")
        if self.shots < 0 or (self.limit is not None and self.limit < 1):
            raise ConfigError(key, "shots must be >= 0 and limit >= 1")

    def check_files(self, key: str) -> None:
        for name in ("path", "fewshot_path"):
            f = getattr(self, name)
            if f and not (os.path.isfile(f) or (self.name == "jmmlu" and os.path.isdir(f))):  # JMMLU: a folder of CSVs
                raise ConfigError(f"{key}.{name}", f"task {self.name}: file not found: {f}")


@dataclass
class EvalConfig:
    """Evaluation run by the release stage (table in the model card) and by `kamado eval`."""

    enabled: bool = True
    tasks: list[EvalTaskConfig] = field(default_factory=lambda: [EvalTaskConfig(name="perplexity")])
    batch_size: int = 8
    max_length: Optional[int] = None  # tokens per forward pass (None: the model's max_position_embeddings)
    contamination_ngram: int = 20  # characters (NFKC, whitespace removed) shared with the training corpus
    seed: int = 1234

    def input_paths(self, key: str) -> list[tuple[str, str]]:
        return marked_paths(self, key) if self.enabled else []  # read by the release stage only when enabled

    def check_inputs(self, key: str, workdir: str, stages: list[str]) -> None:  # noqa: ARG002
        if self.enabled:
            self.check_files(key)

    def check_files(self, key: str) -> None:
        """Every task's data (and shots) file exists, enabled or not (`kamado eval` runs them either way)."""
        for i, task in enumerate(self.tasks):
            task.check_files(f"{key}.tasks[{i}]")
