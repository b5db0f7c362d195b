"""The packages form layers: an import scan of the source (no cycle between top-level packages, the platform
and the data readers import no domain package, nothing imports the composition root) and the serving app built
in a fresh interpreter, which must load no training code, torch, MONAI or matplotlib.

Layers, bottom up: ``datasets``, ``models`` -> ``service`` -> ``inference``, ``worklist``, ``screening``,
``quality``, ``training`` -> ``medscreen``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("medscreen", "service", "datasets", "models", "inference", "worklist", "screening", "quality", "training")
DOMAIN = {"inference", "worklist", "screening", "quality", "training"}
# What each package must never import (on top of the rule that nothing imports the root).
FORBIDDEN = {
    "service": DOMAIN,
    "datasets": DOMAIN | {"service"},
    "models": DOMAIN | {"service"},
    "quality": {"training"},
    "inference": {"training"},
    "worklist": {"training"},
    "screening": {"training"},
}


def imported_packages(path: Path) -> Iterator[tuple[str, int]]:
    """Top-level names imported anywhere in the module (function-level imports too), with their line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> where (``file:line``), for imports between the project's packages."""
    graph: dict[str, dict[str, list[str]]] = {package: {} for package in PACKAGES}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for name, line in imported_packages(path):
                if name in PACKAGES and name != package:
                    graph[package].setdefault(name, []).append(f"{path.relative_to(REPO)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    found = cycles(graph)
    detail = [
        f"{' <-> '.join(component)}: "
        + "; ".join(f"{a} -> {b} ({graph[a][b][0]})" for a in component for b in component if b in graph[a])
        for component in found
    ]
    assert not found, "import cycles between packages:\n" + "\n".join(detail)


def test_lower_layers_import_no_higher_layer() -> None:
    graph = package_graph()
    breaches = [
        f"{package} imports {target} ({', '.join(graph[package][target][:3])})"
        for package, forbidden in FORBIDDEN.items()
        for target in sorted(forbidden & graph[package].keys())
    ]
    breaches += [
        f"{package} imports the composition root ({', '.join(graph[package]['medscreen'][:3])})"
        for package in PACKAGES
        if "medscreen" in graph[package]
    ]
    assert not breaches, "\n".join(breaches)


def test_scan_sees_function_level_imports(tmp_path: Path) -> None:
    # Lazy imports inside handlers are imports too: a cycle hidden in a function is still a cycle.
    module = tmp_path / "lazy.py"
    module.write_text("def handler():\n    from training.gate import evaluate_gate\n    import worklist.api\n")
    assert {name for name, _ in imported_packages(module)} == {"training", "worklist"}
    assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]


@pytest.mark.timeout(180)
def test_serving_app_loads_no_training_code(tmp_path: Path) -> None:
    code = (
        "import sys, pathlib\n"
        "from medscreen.app import create_app\n"
        "from service.settings import Settings\n"
        f"create_app(Settings(home=pathlib.Path({str(tmp_path / 'var')!r})))\n"
        "banned = ('training', 'torch', 'monai', 'matplotlib')\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in banned)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=150
    )
    assert result.stdout.split() == [], f"the serving app loaded: {result.stdout.split()[:20]}"


def test_audit_log_is_read_only_through_service_audit() -> None:
    # One way in (record_audit) and one way to query (query_audit, events_about): the table itself stays private.
    allowed = {Path("service/audit.py"), Path("service/tables.py")}
    users = [
        f"{path.relative_to(REPO)}:{line}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path.relative_to(REPO) not in allowed
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "AuditEvent" in text
    ]
    assert not users, "AuditEvent used outside service/audit.py: " + ", ".join(users)
