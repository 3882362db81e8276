"""The house rules of docs/design.md, checked on the source: layers, no import cycles, a pure core.

Every import counts, including those inside functions and under TYPE_CHECKING: an import moved
into a function to dodge a cycle is still a dependency, and one that points upwards is still wrong.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "digest"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("digest.model",)),
    ("base", ("digest.config", "digest.logs", "digest.packaged", "digest.owner")),
    ("core", ("digest.core",)),
    ("store", ("digest.store",)),
    ("delivery", ("digest.delivery",)),
    ("campaign", ("digest.campaign", "digest.readers")),
    (
        "edges",
        ("digest.scheduler", "digest.service", "digest.web", "digest.cli", "digest.scaffold"),
    ),
)
PURE = ("digest.model", "digest.core")
# What the pure layers may not load: the database, the network, the web server, the scheduler's
# stores. (APScheduler's triggers are date maths and stay allowed in cadence.)
IMPURE_LIBRARIES = ("sqlalchemy", "alembic", "psycopg", "httpx", "fastapi", "starlette", "uvicorn")
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("time", "time")}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:  # Alembic's scripts are loaded by Alembic, not imported
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _imported(module: str) -> Iterator[tuple[str, int]]:
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(_tree(module), package)


def _imports_in(tree: ast.Module, package: str) -> Iterator[tuple[str, int]]:
    """Every module name the tree imports, anywhere in it, with its line; relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from digest.store import db` imports a module
                yield f"{base}.{alias.name}", node.lineno


def _internal_edges(module: str) -> set[str]:
    return {name for name, _ in _imported(module) if name in MODULES and name != module}


def _layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer of docs/design.md; add it to LAYERS")


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph = {m: sorted(_internal_edges(m)) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_every_module_belongs_to_a_layer() -> None:
    for module in MODULES:
        if module != "digest":
            _layer(module)


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("module", [m for m in MODULES if m != "digest"])
def test_imports_point_down_the_layers(module: str) -> None:
    upward = [
        f"{MODULES[module].name}:{line} imports {name} ({LAYERS[_layer(name)][0]})"
        for name, line in _imported(module)
        if name in MODULES and name != "digest" and _layer(name) > _layer(module)
    ]
    assert upward == [], f"{module} is in layer {LAYERS[_layer(module)][0]}"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith(PURE)])
def test_the_core_imports_no_database_network_or_server(module: str) -> None:
    impure = [
        f"line {line}: {name}"
        for name, line in _imported(module)
        if name.split(".")[0] in IMPURE_LIBRARIES
    ]
    assert impure == []


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith(PURE)])
def test_the_core_never_reads_the_clock(module: str) -> None:
    calls = [
        f"line {node.lineno}: {node.func.value.id}.{node.func.attr}()"
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id, node.func.attr) in CLOCK_CALLS
    ]
    utcnow = [
        f"line {node.lineno}: utcnow()"
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "utcnow"
    ]
    assert calls + utcnow == []


def test_importing_the_core_loads_no_sqlalchemy() -> None:
    pure = sorted(m for m in MODULES if m.startswith(PURE))
    code = (
        "import importlib, sys\n"
        f"for name in {pure!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IMPURE_LIBRARIES!r}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert loaded == "[]"


def test_no_module_is_longer_than_one_sitting() -> None:
    long = {
        m: n for m, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_rules_see_imports_inside_functions_and_relative_ones() -> None:
    """The guard itself: an import hidden in a function or under TYPE_CHECKING is still an edge."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .sendgrid import SendGrid\n"
        "def f():\n    from digest.cli import app\n    import digest.web\n"
    )
    names = {name for name, _ in _imports_in(tree, "digest.delivery")}
    assert {"digest.delivery.sendgrid", "digest.cli", "digest.cli.app", "digest.web"} <= names
