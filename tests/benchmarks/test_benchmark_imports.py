"""Every benchmark imports, runs nothing on import, and names only first-party helpers that exist.

The benchmarks run by hand, not in CI: a helper moved in the tests (``_free_port`` out of ``tests/postgres.py``)
had broken ``benchmarks/worklist_api.py`` and ``benchmarks/scoring_scale.py`` unnoticed, because they import it
inside a function. So the imports inside functions are resolved too, without running them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if p.name != "__init__.py")
FIRST_PARTY = {p.parent.name for p in REPO.glob("*/__init__.py")}


def _has_main_guard(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        for node in tree.body
    )


def _first_party_imports(tree: ast.Module) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) of every first-party import in the file, at any depth."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in FIRST_PARTY:
                found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.split(".")[0] in FIRST_PARTY]
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_without_running(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
        assert _has_main_guard(tree), f"{path.name} defines main() but has no `if __name__ == \"__main__\":` guard"
    importlib.import_module(f"benchmarks.{path.stem}")
    for module_name, name, line in _first_party_imports(tree):
        module = importlib.import_module(module_name)
        if name is None or hasattr(module, name):
            continue
        submodule = hasattr(module, "__path__") and importlib.util.find_spec(f"{module_name}.{name}") is not None
        assert submodule, f"{path.name}:{line}: {module_name} has no {name}"
