"""Small builders shared by tests: recipes in tmp folders, JSONL writers."""

from __future__ import annotations

import json
from pathlib import Path

from kamado.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A file or folder under ../shared/data. Absent: the test is skipped on a developer's machine, but fails under
    CI (CI=true), where the shared data is always laid beside the clone: a silent skip there would hide lost coverage."""
    import os

    import pytest

    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"shared data not found: {path} (tests read ../shared/data next to the repository; see its README.md)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(message)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def tiny_recipe(tmp_path: Path, *overrides: str, workdir: str = "run"):
    """The demo recipe pointed at a tmp workdir, with steps cut down for tests."""
    return load_recipe(ROOT / "recipes" / "tiny-cpu.yaml", [f"workdir={tmp_path / workdir}", *overrides])
