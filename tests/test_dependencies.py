"""The install is part of the product: every package kamado imports is declared, and every module imports.

A fresh machine with only what pyproject declares must run kamado (a missing `protobuf` once reached main because
the CI machine had it installed by hand). deptry compares kamado's imports with pyproject's dependencies; the
import walk runs in a fresh interpreter so nothing imported by another test hides a broken module.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

from tests.helpers import ROOT


def test_declared_dependencies_match_imports():
    """deptry: no undeclared import (DEP001/DEP003), no unused declaration (DEP002), no dev package in kamado (DEP004)."""
    exe = shutil.which("deptry") or str((ROOT / ".venv" / "bin" / "deptry"))
    proc = subprocess.run([exe, "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"deptry found dependency issues:\n{proc.stdout}\n{proc.stderr}"


def test_every_kamado_module_imports_in_a_fresh_interpreter():
    code = (
        "import importlib, pkgutil, kamado\n"
        "failed = []\n"
        "for m in pkgutil.walk_packages(kamado.__path__, 'kamado.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{m.name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "raise SystemExit(1 if failed else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"modules that fail to import:\n{proc.stdout}\n{proc.stderr[-3000:]}"


def test_cli_help_does_not_import_torch():
    """`kamado --help` and recipe checks must stay light: torch and DeepSpeed load only when a stage needs them."""
    code = "import sys; from kamado.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'deepspeed', 'transformers') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
