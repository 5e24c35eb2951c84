"""The pipeline: the one ordered list of the stages kamado runs, and what each declares about itself.

Everything that needs to know which stages exist reads this table: the recipe (its sections and default
`stages`), the CLI (sub-commands and their help), the stage contract (which stages train and which publish a
policy), the local executor (kamado/local.py) and the Slurm executor (kamado/slurm/). Adding a stage is one
`StageSpec` here and its own package; nothing else names it.

A stage does its work in one of three shapes, which the executors know and the stages do not:
- `run`: one call `run(recipe, ws) -> StageResult` in one process (tokenizer, release);
- `phases` then `finish`: ordered phases, each split into independent tasks (a process pool here, one job array
  per phase on Slurm, `afterok` on the phase before), then one `finish(recipe, ws, timings) -> StageResult`
  (corpus: filter shards, the dedup phases, the report) — datatrove's split of pipeline and executor;
- `rank_main`: a training stage, `python -m MODULE WORKDIR` on every rank (torchrun here, srun on Slurm, over
  `nodes` × `nproc_per_node` of its config).
Entries are "module:attribute" strings, imported only when the stage runs: `kamado --help` imports no torch.

`KAMADO_PIPELINE=module:attribute` selects another `Pipeline` (a lab's extra stage, the tests' toy stage); the
executors pass the variable on to every job, so a Slurm task runs the same pipeline as its submitter.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

from kamado.corpus.config import CorpusConfig
from kamado.eval.config import EvalConfig
from kamado.finetune.config import DPOConfig, PPOConfig, RewardConfig, SFTConfig
from kamado.release.config import ReleaseConfig
from kamado.slurm.config import SlurmConfig
from kamado.tokenizer.config import TokenizerConfig
from kamado.train.config import PretrainConfig

if TYPE_CHECKING:
    from kamado.recipe import Recipe
    from kamado.stage import Workspace

PIPELINE_ENV = "KAMADO_PIPELINE"


def _one(recipe: Recipe, ws: Workspace) -> int:  # noqa: ARG001
    return 1


def _always(recipe: Recipe) -> bool:  # noqa: ARG001
    return True


@dataclass(frozen=True)
class Phase:
    """One step of a stage's work, split into tasks that run in any order and on any machine.

    Task `t` of `n` does the phase's work units t, t + n, t + 2n, ...; `n` is whatever the executor chose (at most
    `num_tasks`, or the array size fixed at submit time), so every unit is covered for any n >= 1. A task skips a
    unit that has its done-marker: a rerun or a requeued array task does only what is missing."""

    name: str
    # Tasks the phase can use, asked when it starts: every phase before it is done, so it may read their outputs.
    num_tasks: Callable[[Recipe, Workspace], int]
    # Task t of n: returns {"items": work units handled, "skipped_done": units found done already}.
    run_task: Callable[[Recipe, Workspace, int, int], dict]
    # The job array's size, fixed at submit time when no phase has run yet (Slurm).
    array_tasks: Callable[[Recipe], int]
    # Processes on this machine; 1 runs the tasks in the executor's own process (small inputs: no pool start-up).
    local_workers: Callable[[Recipe, Workspace], int] = _one
    # False: on Slurm the stage's finish job runs this phase itself instead of a job array (trivial work).
    slurm_array: Callable[[Recipe], bool] = _always


@dataclass(frozen=True)
class StageSpec:
    name: str  # the stage's name, its recipe section and its folder in the workdir
    config: type  # the dataclass of its recipe section (owned by the stage's package)
    help: str  # one line for `kamado --help`
    run: str | None = None  # "module:function" (recipe, ws) -> StageResult
    phases: str | None = None  # "module:function" (recipe) -> list[Phase], then `finish`
    finish: str | None = None  # "module:function" (recipe, ws, timings) -> StageResult
    rank_main: str | None = None  # training: the module every rank runs (`python -m MODULE WORKDIR`)
    outputs: tuple[str, ...] = ()  # what it leaves in its folder (relative paths), recorded in DONE.json
    policy: bool = False  # its hf/ is a causal LM that a later stage continues from or release publishes
    default: bool = True  # run by a recipe that lists no `stages`
    also_covers: tuple[str, ...] = ()  # other recipe sections its result depends on (release: eval)

    def __post_init__(self) -> None:
        shapes = [self.run is not None, self.phases is not None, self.rank_main is not None]
        if sum(shapes) != 1 or (self.phases is None) != (self.finish is None):
            raise ValueError(f"stage {self.name}: give exactly one of run, phases + finish, rank_main")

    @property
    def training(self) -> bool:
        return self.rank_main is not None

    def entry(self, which: str) -> Callable[..., Any]:
        """The function named by `run`, `phases` or `finish`, imported now."""
        return load_entry(getattr(self, which))


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[StageSpec, ...]
    # Recipe sections that are no stage of their own: (name, dataclass).
    sections: tuple[tuple[str, type], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages] + [n for n, _ in self.sections]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline: a stage or section name is used twice: {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def training(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages if s.training)

    @property
    def policy(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages if s.policy)

    @property
    def default(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages if s.default)

    def spec(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"unknown stage {name!r} (known: {', '.join(self.names)})")


TRAINING_OUTPUTS = ("hf", "checkpoints", "metrics.jsonl", "result.json", "reference_logits.pt")

PIPELINE = Pipeline(
    stages=(
        StageSpec("corpus", CorpusConfig, "read, normalize, filter, mask PII and deduplicate raw Japanese text",
                  phases="kamado.corpus.stage:phases", finish="kamado.corpus.stage:finish",
                  outputs=("data", "report.json", "summary.txt", "duplicates.json")),
        StageSpec("tokenizer", TokenizerConfig,
                  "train a SentencePiece tokenizer, export it to HF, encode packed token shards "
                  "(`kamado tokenizer eval --tokenizer PATH... --text FILE...` compares tokenizers)",
                  run="kamado.tokenizer.stage:run"),
        StageSpec("pretrain", PretrainConfig, "pretrain a Llama-style model with DeepSpeed ZeRO",
                  rank_main="kamado.train.pretrain", outputs=TRAINING_OUTPUTS, policy=True),
        StageSpec("sft", SFTConfig, "instruction fine-tuning: instruction or multi-turn `messages` records, "
                  "loss on assistant tokens only", rank_main="kamado.finetune.sft", outputs=TRAINING_OUTPUTS, policy=True),
        StageSpec("reward", RewardConfig, "reward model: the LM with a scalar head, pairwise Bradley-Terry loss "
                  "(optional stage)", rank_main="kamado.finetune.reward", outputs=TRAINING_OUTPUTS, default=False),
        StageSpec("dpo", DPOConfig, "preference optimisation (DPO, IPO, label smoothing) against a frozen reference",
                  rank_main="kamado.finetune.dpo", outputs=TRAINING_OUTPUTS, policy=True),
        StageSpec("ppo", PPOConfig, "RLHF on sampled rollouts: PPO (value model, GAE, KL penalty) or GRPO "
                  "(optional stage)", rank_main="kamado.finetune.ppo", outputs=TRAINING_OUTPUTS, policy=True,
                  default=False),
        StageSpec("release", ReleaseConfig, "export a verified Hugging Face checkpoint with a model card",
                  run="kamado.release.stage:run", also_covers=("eval",)),
    ),
    sections=(("eval", EvalConfig), ("slurm", SlurmConfig)),
)


def load_entry(ref: str) -> Any:
    """"package.module:attribute" → the attribute (imported now)."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@lru_cache(maxsize=None)
def _load_pipeline(ref: str) -> Pipeline:
    obj = load_entry(ref)
    if not isinstance(obj, Pipeline):
        raise TypeError(f"{PIPELINE_ENV}={ref}: not a kamado.pipeline.Pipeline but {type(obj).__name__}")
    return obj


def current() -> Pipeline:
    """The pipeline this process runs: KAMADO_PIPELINE's, else kamado's own."""
    ref = os.environ.get(PIPELINE_ENV)
    return _load_pipeline(ref) if ref else PIPELINE
