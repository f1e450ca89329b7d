"""Layers point one way: in the web layer and in each plugin, no module imports one that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "bisman_ratelimit.web": ROOT / "bisman_ratelimit" / "web",
    "bisman_ratelimit_starlette": ROOT / "integrations" / "bisman_ratelimit_starlette",
    "bisman_ratelimit_django": ROOT / "integrations" / "bisman_ratelimit_django",
    "bisman_ratelimit_flask": ROOT / "integrations" / "bisman_ratelimit_flask",
}


def _own_imports(package: str, path: Path) -> tuple[set[str], list[str]]:
    """The sibling modules ``path`` imports, and those it imports inside a function."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    nested: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level == 1:
                    target = child.module or ""
                elif child.module and child.module.startswith(package + "."):
                    target = child.module[len(package) + 1 :]
                else:
                    target = ""
                if target:
                    found.add(target.split(".")[0])
                    if inner:
                        nested.append(target)
            visit(child, inner)

    visit(tree, False)
    return found, nested


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_one_that_imports_it(package: str) -> None:
    graph: dict[str, set[str]] = {}
    nested: dict[str, list[str]] = {}
    for path in sorted(PACKAGES[package].glob("*.py")):
        if path.stem == "__init__":
            continue
        graph[path.stem], inner = _own_imports(package, path)
        if inner:
            nested[path.stem] = inner
    assert nested == {}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph.get(start, ()))
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        return seen

    assert [module for module in graph if module in reach(module)] == []


def test_planning_sits_below_evaluation() -> None:
    plan, _ = _own_imports("bisman_ratelimit.web", PACKAGES["bisman_ratelimit.web"] / "_plan.py")
    evaluate, _ = _own_imports("bisman_ratelimit.web", PACKAGES["bisman_ratelimit.web"] / "_evaluate.py")
    assert "_evaluate" not in plan
    assert "_plan" in evaluate
