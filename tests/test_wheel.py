"""The wheel: it carries the default theme, the starter glossary and the migrations, and an
installed wheel, with no checkout in sight, starts a newsletter and sends its demo issue.

The wheel is built by pip from a copy of the checkout (so the build leaves no `build/` or
`*.egg-info` behind and no stale file from an earlier build slips in), with build isolation:
pyproject.toml asks for a newer setuptools than a fresh venv carries, and pip caches it.
"""

from __future__ import annotations

import os
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
    migrations = files_under(REPO / "digest" / "store" / "migrations")
    assert {"env.py", "script.py.mako", "versions/0001_initial_schema.py"} <= migrations
    assert in_wheel(names, "digest/store/migrations") == migrations


def test_the_wheel_carries_every_catalogue(names):
    # Each language is a package line in pyproject.toml (docs/translating.md): one forgotten
    # there would leave its readers in English on an installed digest.
    catalogues = files_under(REPO / "digest" / "locale")
    assert {
        "messages.pot",
        "en/LC_MESSAGES/messages.po",
        "nl/LC_MESSAGES/messages.po",
    } <= catalogues
    assert in_wheel(names, "digest/locale") == catalogues


def test_the_wheel_carries_every_module_of_the_package(names):
    # pyproject.toml lists the packages by hand (a mapped folder rules out packages.find):
    # a new subpackage missing from that list fails here instead of on a user's machine.
    modules = {f"digest/{m}" for m in files_under(REPO / "digest") if m.endswith(".py")}
    assert modules <= names


def test_the_wheel_holds_only_the_digest_package_and_its_metadata(names):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert {n.split("/", 1)[0] for n in names} == {"digest", f"digest-{version}.dist-info"}


@pytest.mark.slow
def test_the_installed_wheel_starts_a_newsletter_and_sends_its_demo_from_any_folder(
    wheel, tmp_path
):
    """`pip install digest`, then `digest init site && cd site && digest demo`.

    The wheel is installed with --target into a folder that alone is on PYTHONPATH, and the
    commands run from an empty folder outside the checkout: the checkout is not importable, so
    what runs is the wheel. Dependencies come from this interpreter's site-packages, where the
    checkout's own editable install sits behind the --target folder on the path.
    """
    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    work = tmp_path / "anywhere"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DIGEST_", "SENDGRID_", "PYTHON"))
    }
    env["PYTHONPATH"] = str(target)
    digest = str(target / "bin" / "digest")

    def run(*args: str, cwd: Path) -> str:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    where = run(
        sys.executable,
        "-c",
        "import digest, digest.packaged as s; print(digest.__file__); print(s.default_theme_dir())",
        cwd=work,
    ).split()
    assert where == [str(target / "digest" / "__init__.py"), str(target / "digest" / "theme")]

    run(digest, "init", "site", cwd=work)
    site = work / "site"
    assert run(digest, "terms", "validate", cwd=site).startswith("5 terms, 0 errors")
    output = run(digest, "demo", cwd=site)
    assert "issue sent" in output
    assert len(list((site / "outbox").glob("*.eml"))) == 3
