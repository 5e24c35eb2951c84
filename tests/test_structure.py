"""The package's wiring, checked from its source: no import cycle anywhere in kamado/, no module much over 400
lines, and no stage named by the executors or the training loop (kamado/pipeline.py is where stages are listed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from kamado.pipeline import PIPELINE

PACKAGE = Path(__file__).resolve().parents[1] / "kamado"
MAX_LINES = 420  # "about 400": a module past this is split by concern


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph() -> dict[str, set[str]]:
    """{module: kamado modules it imports}, imports inside functions included (they run too), imports under
    `if TYPE_CHECKING:` left out (they never run)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(n) for block in ast.walk(tree) if _type_checking_block(block) for n in ast.walk(block)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` needs mod (its package is imported on the way, as for any submodule);
                # `from mod import name` needs mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # `from pkg import name`: the module, else its package
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("kamado"):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_kamado():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(c) for c in found)


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def _string_literals(path: Path) -> list[str]:
    """The module's string constants that are no docstring (comments and docstrings may give examples)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_executors_name_no_stage():
    """The local and Slurm executors run whatever kamado/pipeline.py lists: no stage name in their code."""
    names = set(PIPELINE.names)
    paths = [*PACKAGE.glob("slurm/*.py"), PACKAGE / "local.py", PACKAGE / "phase_tasks.py"]
    offenders = {}
    for path in paths:
        for text in _string_literals(path):
            words = set(re.findall(r"[a-z]+", text)) if text in names or "kamado." in text or "/" in text else set()
            if names & words:
                offenders.setdefault(str(path.relative_to(PACKAGE.parent)), set()).update(names & words)
    assert not offenders, f"stage names outside kamado/pipeline.py: {offenders}"


def test_train_names_no_finetune_module():
    """The training loop serves every training stage; which modules are stages is the pipeline's business."""
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith("kamado.train"):
            assert not {m for m in imports if m.startswith("kamado.finetune")}, module
            path = PACKAGE.parent / (module.replace(".", "/") + ".py")
            if path.is_file():
                assert not [t for t in _string_literals(path) if "kamado.finetune" in t], module


def test_the_stage_contract_imports_no_stage():
    stage_packages = ("kamado.corpus", "kamado.tokenizer", "kamado.train", "kamado.finetune", "kamado.release")
    imports = import_graph()["kamado.stage"]
    assert not {m for m in imports if m.startswith(stage_packages)}, imports
