"""The packages point one way (the layout in the README): ``inference`` imports nothing
of Django or the web layer; ``core`` imports only ``inference``; ``observability``
imports ``core``; the apps import ``core``, ``observability``, ``inference`` and each
other without cycles; only the composition root (``gpt3dev``) imports the apps, and
nothing imports it. Every import counts, those inside functions included: a lazy
import still points upward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("access", "completions", "embeddings", "ledger", "models_api", "playground", "rerank", "responses", "upstream")
LAYER = {"inference": 0, "core": 1, "observability": 2, **{app: 3 for app in APPS}, "gpt3dev": 4}


def _imports(path: Path) -> set[str]:
    """The top-level names of everything ``path`` imports (relative imports: its own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])
    return names


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the modules that do it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imports(path):
                if name != package and (name in LAYER or name in ("django", "rest_framework")):
                    edges.setdefault((package, name), []).append(str(path.relative_to(ROOT)))
    return edges


def test_inference_imports_nothing_of_django_or_the_web_layer():
    bad = {edge: where for edge, where in _edges().items() if edge[0] == "inference"}
    assert not bad, bad


def test_no_package_imports_one_above_it():
    upward = {
        edge: where
        for edge, where in _edges().items()
        if edge[1] in LAYER and LAYER[edge[1]] > LAYER[edge[0]]
    }
    assert not upward, upward


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for importer, imported in _edges():
        if imported in LAYER:
            graph.setdefault(importer, set()).add(imported)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "import cycle: " + " -> ".join([*path[path.index(node):], node])
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for package in sorted(graph):
        visit(package, [])
