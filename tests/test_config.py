"""Settings: env beats digest.toml beats defaults; a missing secret is generated once."""

from __future__ import annotations

import pytest

from digest.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in ["DIGEST_BASE_URL", "DIGEST_TIMEZONE", "DIGEST_TRANSPORT", "DIGEST_SECRET_KEY"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "digest.toml"))


def test_defaults_work_without_any_configuration():
    settings = Settings()
    assert settings.transport == "outbox"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.timezone == "UTC"


def test_toml_file_is_read_and_env_wins(tmp_path, monkeypatch):
    (tmp_path / "digest.toml").write_text(
        'base_url = "https://news.example.org/"\ntimezone = "Europe/Amsterdam"\n'
    )
    monkeypatch.setenv("DIGEST_TIMEZONE", "Asia/Tokyo")
    settings = Settings()
    assert settings.base_url == "https://news.example.org"
    assert settings.timezone == "Asia/Tokyo"


def test_bad_values_are_rejected_with_the_field(monkeypatch):
    monkeypatch.setenv("DIGEST_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="unknown IANA time zone 'Mars/Olympus'"):
        Settings()


def test_sendgrid_key_comes_from_the_standard_variable(monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.secret")
    settings = Settings()
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == "SG.secret"
    assert "SG.secret" not in repr(settings)


def test_secret_key_is_generated_once_and_kept_private(tmp_path):
    settings = Settings(secret_key_file=tmp_path / "sub" / ".secret_key")
    first = settings.signing_key()
    assert len(first) >= 40
    assert settings.signing_key() == first
    assert (tmp_path / "sub" / ".secret_key").stat().st_mode & 0o077 == 0
