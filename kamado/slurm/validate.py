"""Recipe values that end up in an sbatch script or in the dry run's submit.sh, checked when the recipe loads.

Light on purpose (recipe loading calls it): no submitit, nothing heavy.

Why: an sbatch script is a shell script whose `#SBATCH` lines sbatch parses itself. A newline inside a value
(`slurm.account`, `slurm.qos`, an `extra_sbatch` line, a setup line, the workdir) ends the `#SBATCH` block early,
so every later directive is silently ignored and the rest of the value runs as a shell command. So:
- no control character (newline, NUL, escape, ...) in any string that reaches a script; a tab is allowed only in
  `slurm.setup`, which is shell code by design;
- partition, account and qos are names: letters, digits and `_ . + -`, not starting with `-`;
- each `extra_sbatch` line is one long option, split like a shell would (shlex): `--comment="my run"` keeps its
  value whole; the scripts quote it back (submitit renders `#SBATCH --key=<shlex-quoted value>`, which sbatch's
  own parser reads back, quotes included).
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from typing import TYPE_CHECKING

from kamado.config import ConfigError, RecipeError

if TYPE_CHECKING:
    from kamado.recipe import Recipe

SAFE_NAME = re.compile(r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]{0,127}\Z")  # partition, account, qos
OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")  # an sbatch long option (submitit turns "_" into "-")
# options kamado sets itself and relies on: the array size, the afterok chain, the log files `kamado slurm status`
# points to, and the script itself
RESERVED_OPTIONS = {"array": "kamado sizes the job arrays (slurm.max_array_tasks, slurm.array_parallelism)",
                    "dependency": "kamado chains the jobs with afterok", "output": "kamado puts the logs in <workdir>/slurm/<stage>",
                    "error": "kamado puts the logs in <workdir>/slurm/<stage>", "wrap": "kamado writes the script"}


def _control_chars(text: str, allow_tab: bool = False) -> list[str]:
    """The control characters in text (Unicode category Cc, plus the line and paragraph separators), as escapes."""
    found = [ch for ch in text if (unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029") and not (allow_tab and ch == "\t")]
    return sorted({repr(ch)[1:-1] for ch in found})


def check_text(key: str, value: str, allow_tab: bool = False) -> None:
    """Raise ConfigError naming `key` when value holds a control character (a newline would end the line)."""
    bad = _control_chars(value, allow_tab)
    if bad:
        raise ConfigError(key, f"{value!r} holds control character(s) {', '.join(bad)}: "
                          "it would break the line it goes into in the sbatch script")


def check_name(key: str, value: str) -> None:
    check_text(key, value)
    if not SAFE_NAME.match(value):
        raise ConfigError(key, f"{value!r} is not a Slurm name: use letters, digits and _ . + - "
                          "(at most 128 characters, not starting with -)")


def parse_extra_sbatch(lines: list[str], key: str = "slurm") -> dict[str, str | bool]:
    """`--key=value`, `--key value` or `--flag` per line (an optional leading "#SBATCH" is dropped), split with
    shlex → {key: value or True}, submitit's additional_parameters. Raises ConfigError naming the line's key."""
    out: dict[str, str | bool] = {}
    for i, line in enumerate(lines):
        key_name = f"{key}.extra_sbatch[{i}]"
        check_text(key_name, line)
        text = line.strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):]
        try:
            tokens = shlex.split(text)
        except ValueError as exc:  # an unclosed quote
            raise ConfigError(key_name, f"{line!r}: {exc}") from exc
        if not tokens or not tokens[0].startswith("--"):
            raise ConfigError(key_name, f"{line!r}: write long options, e.g. --constraint=a100")
        name, sep, value = tokens[0][2:].partition("=")
        if not sep and len(tokens) == 2:
            value, sep = tokens[1], "="
        elif len(tokens) > 1:
            whole = " ".join(([value] if sep else []) + tokens[1:])
            raise ConfigError(key_name, f"{line!r}: one option per line; quote a value with spaces, "
                              f"e.g. --{name}={shlex.quote(whole)}")
        if not OPTION_NAME.match(name):
            raise ConfigError(key_name, f"{line!r}: {name!r} is not an sbatch option name")
        if name.replace("_", "-") in RESERVED_OPTIONS:
            raise ConfigError(key_name, f"{line!r}: --{name} cannot be set here: "
                              f"{RESERVED_OPTIONS[name.replace('_', '-')]}")
        out[name] = value if sep else True
    return out


def check_slurm_values(recipe: Recipe, where: str = "") -> None:
    """Every recipe value that reaches an sbatch script or submit.sh (see the module docstring): the name, the
    workdir (which `--workdir` may have replaced since the recipe loaded) and the slurm section.
    `where` (e.g. the recipe path) prefixes the messages."""
    try:
        check_text("name", recipe.name)
        check_text("workdir", str(recipe.workdir))
        recipe.slurm.validate("slurm")
    except ConfigError as exc:
        if not where:
            raise
        raise RecipeError(f"{where}: {exc}") from exc


def job_name(text: str) -> str:
    """A job name with nothing but safe characters (the recipe name may hold spaces or any other letter)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
