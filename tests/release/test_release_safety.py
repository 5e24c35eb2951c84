"""The release stage deletes only what it made (#14): a model_name that leaves the stage folder, a folder in the
way that kamado did not make, or a symlink where its partial folder goes are errors that touch nothing; its own
reference_logits.pt is read with weights_only=True, so a pickle there cannot run code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from kamado.release.stage import OWNED, ReleaseFolderError, run
from kamado.local import run_stages
from kamado.stage import Workspace


def _precious(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_text("ユーザーのデータ\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", ["../outside", "/tmp/kamado-abs-release-name", "a/b", ".hidden", ".."])
def test_model_name_must_be_a_plain_name(untrained_release_recipe, name):
    recipe = untrained_release_recipe
    outside = _precious(Path(recipe.workdir) / "outside")
    recipe.release.model_name = name  # set after loading: the stage checks on its own, whatever the recipe check does
    with pytest.raises(ReleaseFolderError, match="must be a plain folder name"):
        run(recipe, Workspace(recipe))
    assert (outside / "data.txt").read_text(encoding="utf-8") == "ユーザーのデータ\n"


def test_a_folder_kamado_did_not_make_is_never_replaced(untrained_release_recipe):
    recipe = untrained_release_recipe
    run_stages(recipe, ["release"], log=lambda _: None)  # the release stage folder now exists, made by kamado
    folder = Workspace(recipe).stage_dir("release")
    theirs = _precious(folder / "their-model")
    recipe.release.model_name = "their-model"
    with pytest.raises(ReleaseFolderError, match="was not created by kamado"):
        run(recipe, Workspace(recipe))
    assert (theirs / "data.txt").read_text(encoding="utf-8") == "ユーザーのデータ\n"
    assert "their-model" not in json.loads((folder / OWNED).read_text())
    assert not (folder / ".their-model.partial").exists()
    # a symlink where the partial folder goes, even under a name kamado claimed: refused, its target untouched
    target = _precious(Path(recipe.workdir).parent / "elsewhere")
    recipe.release.model_name = "kamado-tiny-ja"
    (folder / ".kamado-tiny-ja.partial").symlink_to(target)
    (folder / OWNED).write_text(json.dumps(sorted(json.loads((folder / OWNED).read_text()) + [".kamado-tiny-ja.partial"])))
    with pytest.raises(ReleaseFolderError, match="was not created by kamado"):
        run(recipe, Workspace(recipe))
    assert (target / "data.txt").is_file() and (folder / "kamado-tiny-ja" / "config.json").is_file()


class _RunsOnLoad:
    """Unpickling this with weights_only=False would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_reference_logits_are_loaded_weights_only(untrained_release_recipe):
    recipe = untrained_release_recipe
    marker = Path(recipe.workdir).parent / "code-ran"
    ref = Workspace(recipe).stage_dir("pretrain") / "reference_logits.pt"
    torch.save({"prompts": list(recipe.release.prompts), "logits": [], "checkpoint": None, "x": _RunsOnLoad(marker)}, ref)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run(recipe, Workspace(recipe))
    assert not marker.exists()
