"""`digest --terms DIR --config FILE`: the global options beat their env vars, and leave env alone.

They ride on the command's context, not os.environ; the settings built from them are the process's
settings, so the weekly job `digest run` schedules (which asks `get_settings()`) sees them too.
"""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from digest.cli import app
from digest.config import get_settings
from tests.conftest import term_text

runner = CliRunner()


def _schedule(output: str) -> str:
    """The value of `digest status`'s schedule row."""
    line = next(row.strip() for row in output.splitlines() if row.strip().startswith("schedule"))
    return line.split(None, 1)[1]


def test_the_config_env_var_names_the_settings_file(settings_env, tmp_path, monkeypatch):
    conf = tmp_path / "from-env.toml"
    conf.write_text('schedule = "fri 07:30"\ntimezone = "Europe/Amsterdam"\n')
    monkeypatch.setenv("DIGEST_CONFIG", str(conf))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert _schedule(result.output) == "fri 07:30 (Europe/Amsterdam)"


def test_the_config_option_beats_the_env_var(settings_env, tmp_path, monkeypatch):
    (tmp_path / "from-env.toml").write_text('schedule = "fri 07:30"\n')
    (tmp_path / "from-option.toml").write_text('schedule = "tue 06:15"\ntimezone = "Asia/Tokyo"\n')
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "from-env.toml"))
    result = runner.invoke(app, ["--config", str(tmp_path / "from-option.toml"), "status"])
    assert result.exit_code == 0, result.output
    assert _schedule(result.output) == "tue 06:15 (Asia/Tokyo)"
    # os.environ is not how the option travels: the env var still names the other file.
    assert os.environ["DIGEST_CONFIG"] == str(tmp_path / "from-env.toml")
    # ...yet code asking for the process's settings later (the weekly job) sees the option's file.
    assert get_settings().schedule == "tue 06:15"


def test_the_terms_option_beats_the_env_var(settings_env, make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"]),
            "beta": term_text("Beta", related=["alpha"]),
        }
    )
    assert os.environ["DIGEST_TERMS_DIR"] != str(folder)
    result = runner.invoke(app, ["--terms", str(folder), "terms", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "2 terms"
    assert os.environ["DIGEST_TERMS_DIR"] == settings_env["DIGEST_TERMS_DIR"]
    assert get_settings().terms_dir == Path(folder)
    # The next invocation without the option reads the env var again.
    again = runner.invoke(app, ["terms", "list"])
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1] != "2 terms"


def test_a_settings_error_from_the_options_fails_with_exit_1(settings_env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('timezone = "Mars/Olympus"\n')
    result = runner.invoke(app, ["--config", str(bad), "status"])
    assert result.exit_code == 1
    assert "invalid settings" in result.output
    assert "unknown IANA time zone 'Mars/Olympus'" in result.output
