"""Recipe values that reach sbatch scripts are checked when the recipe loads; extra_sbatch is split like a shell
would; what goes into the scripts is quoted. No cluster needed (the scripts are rendered, not submitted)."""
from __future__ import annotations

import json
import re

import pytest

from kamado.recipe import RecipeError, load_recipe
from kamado.slurm.dry_run import render
from kamado.slurm.executor import plan
from kamado.slurm.validate import parse_extra_sbatch


def recipe_file(tmp_path, slurm: dict | None = None, name: str = "t", workdir: str = "run"):
    """A minimal recipe; values are written as JSON (valid YAML), so "\\n" and "\\u0000" reach the loader as such."""
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: {json.dumps(name)}\nworkdir: {json.dumps(workdir)}\nstages: [corpus]\n"
                    f"corpus: {{sources: [{{name: a, paths: [a.jsonl]}}]}}\nslurm: {json.dumps(slurm or {})}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("key, slurm, extra", [
    ("slurm.account", {"account": "proj\n#SBATCH --wrap=id"}, {}),
    ("slurm.qos", {"qos": "normal\u0000"}, {}),
    ("slurm.partition", {"partition": "gpu\rx"}, {}),
    ("slurm.extra_sbatch[1]", {"extra_sbatch": ["--exclusive", "--comment=a\nrm -rf ~"]}, {}),
    ("slurm.setup[0]", {"setup": ["module load cuda\u001b[2J"]}, {}),
    ("workdir", {}, {"workdir": "run\nid"}),
    ("name", {}, {"name": "demo\u2028x"}),
])
def test_control_characters_are_refused_naming_the_key(tmp_path, key, slurm, extra):
    with pytest.raises(RecipeError, match=re.escape(f"key '{key}'") + ".*control character"):
        load_recipe(recipe_file(tmp_path, slurm, **extra))


@pytest.mark.parametrize("key, value", [("partition", "gpu debug"), ("account", "-x"), ("qos", "a;b"),
                                        ("account", "$(id)"), ("partition", "")])
def test_partition_account_qos_are_plain_names(tmp_path, key, value):
    with pytest.raises(RecipeError, match=re.escape(f"key 'slurm.{key}'") + ".*not a Slurm name"):
        load_recipe(recipe_file(tmp_path, {key: value}))


def test_plain_names_and_a_tab_in_setup_load(tmp_path):
    recipe = load_recipe(recipe_file(tmp_path, {"partition": "gpu-a100", "account": "proj_01.x", "qos": "high+",
                                                "setup": ["if true;\tthen :; fi"]}))
    assert (recipe.slurm.partition, recipe.slurm.account, recipe.slurm.qos) == ("gpu-a100", "proj_01.x", "high+")


def test_extra_sbatch_is_split_like_a_shell():
    assert parse_extra_sbatch(['--comment="my run"', "#SBATCH --constraint a100", "--exclusive",
                               "--mail-user='a b@x'", "--gres=gpu:4"]) == {
        "comment": "my run", "constraint": "a100", "exclusive": True, "mail-user": "a b@x", "gres": "gpu:4"}
    with pytest.raises(RecipeError, match=r"slurm.extra_sbatch\[0\]'.*one option per line.*--comment='my run'"):
        parse_extra_sbatch(["--comment=my run"])  # used to become comment="my=run"... now: quote it
    with pytest.raises(RecipeError, match=r"extra_sbatch\[0\]'.*No closing quotation"):
        parse_extra_sbatch(['--comment="my run'])
    with pytest.raises(RecipeError, match=r"extra_sbatch\[0\]'.*long options"):
        parse_extra_sbatch(["-N 2"])
    with pytest.raises(RecipeError, match=r"extra_sbatch\[0\]'.*not an sbatch option name"):
        parse_extra_sbatch(["--$(id)=1"])
    with pytest.raises(RecipeError, match=r"extra_sbatch\[1\]'.*--dependency cannot be set here: kamado chains"):
        parse_extra_sbatch(["--hold", "--dependency=afterany:1"])


def test_rendered_script_quotes_values_and_keeps_every_directive(tmp_path):
    """A quoted extra_sbatch value stays one shell-quoted value (sbatch reads its quotes back); a recipe name with
    spaces gives a safe job name; every #SBATCH line comes before the first shell line."""
    recipe = load_recipe(recipe_file(tmp_path, {"partition": "debug", "account": "proj",
                                                "extra_sbatch": ['--comment="my run; id"', "--exclusive"]},
                                     name="my model $(id)"))
    script = render(plan(recipe, ["corpus"], "debug")[-1], tmp_path / "run" / "slurm" / "corpus")
    lines = script.splitlines()
    assert "#SBATCH --comment='my run; id'" in lines and "#SBATCH --exclusive" in lines
    assert "#SBATCH --job-name=kamado-my_model___id_-corpus-finish" in lines and "#SBATCH --account=proj" in lines
    first_shell = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert not [ln for ln in lines[first_shell:] if ln.startswith("#SBATCH")]


def test_workdir_override_is_checked_at_submit(tmp_path):
    """--workdir replaces the workdir after the recipe loaded: submit checks the values again."""
    from kamado.slurm.executor import submit

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    recipe = load_recipe(recipe_file(tmp_path))
    recipe.workdir = str(tmp_path / "run\nx")
    with pytest.raises(RecipeError, match="key 'workdir'.*control character"):
        submit(recipe, ["corpus"], dry_run=True)
