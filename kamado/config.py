"""What every stage's typed config shares: the marks that say which keys change a stage's result.

Each stage package owns its config dataclass (kamado/<package>/config.py); kamado/recipe.py composes them into
the recipe, loads YAML into it and names the file in every error. This module imports nothing of kamado.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


# A stage's fingerprint covers the keys that change its result. Keys marked `operational` (logging, checkpoint
# and eval cadence, how many checkpoints are kept, worker processes, samples kept for inspection) never
# invalidate a finished stage nor move its folder aside. `extendable` keys (a training stage's max_steps) are
# kept out of the fingerprint too: raising one resumes the stage from its newest checkpoint (kamado/stage.py).
def operational(default: Any) -> Any:
    return field(default=default, metadata={"operational": True})


def extendable(default: Any) -> Any:
    return field(default=default, metadata={"extendable": True})


# `layout` keys (how many nodes and ranks, and the gradient accumulation that makes up the difference) say how a
# training step is spread over the machines a cluster gave this time, not what a step computes: the fingerprint
# holds their product with micro_batch_size, the samples per optimizer step, instead of each. A resume on another
# allocation with the same samples per step continues (kamado/train/elastic.py reshards the checkpoint).
def layout(default: Any) -> Any:
    return field(default=default, metadata={"layout": True})


def marked_keys(cls: type, mark: str) -> set[str]:
    """Names of `cls`'s fields marked `mark` here or in any dataclass it derives from (a subclass that only
    changes a default, like SFTConfig.max_steps, keeps its base's mark)."""
    return {f.name for base in cls.__mro__ if dataclasses.is_dataclass(base)
            for f in dataclasses.fields(base) if f.metadata.get(mark)}

