"""The wheel: it carries the default theme, the starter glossary and the migrations.

The wheel is built by pip from a copy of the checkout (so the build leaves no `build/` or
`*.egg-info` behind and no stale file from an earlier build slips in), with build isolation:
pyproject.toml asks for a newer setuptools than a fresh venv carries, and pip caches it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Not inputs of the build: version control, caches, and what digest writes while it runs.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    "build",
    "dist",
    "outbox",
    "subscribers",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "node_modules",
)


def files_under(folder: Path) -> set[str]:
    """Every file below `folder` (not caches), as posix paths relative to it."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "digest"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (built,) = out.glob("digest-*.whl")
    return built


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def in_wheel(names: set[str], folder: str) -> set[str]:
    prefix = folder.rstrip("/") + "/"
    return {n.removeprefix(prefix) for n in names if n.startswith(prefix)}


def test_the_wheel_carries_every_template_of_the_default_theme(names):
    theme = files_under(REPO / "templates")
    assert "email.mjml.j2" in theme and "web/subscribe.html.j2" in theme
    assert in_wheel(names, "digest/theme") == theme


def test_the_wheel_carries_every_term_of_the_starter_glossary(names):
    terms = files_under(REPO / "terms")
    assert len(terms) > 50
    assert in_wheel(names, "digest/starter") == terms


def test_the_wheel_carries_the_migrations(names):
    migrations = files_under(REPO / "digest" / "migrations")
    assert {"env.py", "script.py.mako", "versions/0001_initial_schema.py"} <= migrations
    assert in_wheel(names, "digest/migrations") == migrations


def test_the_wheel_carries_every_module_of_the_package(names):
    # pyproject.toml lists the packages by hand (a mapped folder rules out packages.find):
    # a new subpackage missing from that list fails here instead of on a user's machine.
    modules = {f"digest/{m}" for m in files_under(REPO / "digest") if m.endswith(".py")}
    assert modules <= names


def test_the_wheel_holds_only_the_digest_package_and_its_metadata(names):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert {n.split("/", 1)[0] for n in names} == {"digest", f"digest-{version}.dist-info"}
