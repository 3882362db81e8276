"""`digest --help` starts without the libraries only some commands need, and those still load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What `digest --help` used to import and no command's signature needs: together ~0.4 s of a
# 0.6 s start-up on the 2-core machine.
_DEFERRED = ("sqlalchemy", "alembic", "pydantic", "pydantic_settings", "email_validator", "yaml")


def _loaded_after(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    code = (
        "import sys\n"
        "from digest.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    run_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=run_env
    )
    return set(out.stdout.split())


def test_help_imports_no_database_or_settings_library():
    loaded = _loaded_after(["--help"])
    assert "typer" in loaded
    assert loaded.isdisjoint(_DEFERRED), sorted(loaded & set(_DEFERRED))


def test_a_command_loads_what_it_uses(tmp_path):
    env = {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_CONFIG": str(tmp_path / "absent.toml"),
        "DIGEST_TERMS_DIR": str(tmp_path / "terms"),
    }
    loaded = _loaded_after(["subscribers", "count"], env)
    assert {"sqlalchemy", "pydantic_settings"} <= loaded
    assert (tmp_path / "digest.db").exists()  # it ran: the schema was brought up


def test_a_lazy_module_is_the_module_import_gives():
    code = (
        "import sys\n"
        "from digest.cli import _common\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "import digest.store.db as real\n"
        "from digest.store import db\n"
        "assert _common.db is real is db is sys.modules['digest.store.db']\n"
        "assert callable(_common.db.make_engine) and 'sqlalchemy' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
