"""The container files keep their promises: image shape, compose stack, Grafana data source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ROOT_USERS = {"root", "0", "0:0", "root:root"}


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def commands(instructions: list[dockerfile.Command], name: str) -> list[dockerfile.Command]:
    return [c for c in instructions if c.cmd == name]


def only(instructions: list[dockerfile.Command], name: str) -> dockerfile.Command:
    found = commands(instructions, name)
    assert len(found) == 1, f"expected one {name}, found {len(found)}"
    return found[0]


def env_values(instructions: list[dockerfile.Command]) -> dict[str, str]:
    """ENV KEY=VALUE pairs (the parser gives them flattened: key, value, key, value...)."""
    values: dict[str, str] = {}
    for env in commands(instructions, "ENV"):
        pairs = env.value
        values.update(zip(pairs[::2], (v.strip('"') for v in pairs[1::2]), strict=True))
    return values


def position(instructions: list[dockerfile.Command], command: dockerfile.Command) -> int:
    return instructions.index(command)


def test_the_base_image_is_python_311_slim(instructions):
    assert instructions[0].cmd == "FROM"
    assert instructions[0].value[0].startswith("python:3.11-slim")


def test_it_runs_as_a_non_root_user_set_after_every_install(instructions):
    user = only(instructions, "USER")
    assert user.value[0] not in ROOT_USERS
    installs = [c for c in commands(instructions, "RUN") if "install" in c.value[0]]
    assert installs, "no RUN installs the package"
    assert all(position(instructions, run) < position(instructions, user) for run in installs)
    assert any('pip install --no-cache-dir ".[postgres]"' in run.value[0] for run in installs)


def test_the_data_volume_is_declared_after_it_is_given_to_the_user(instructions):
    volume = only(instructions, "VOLUME")
    assert "/data" in volume.value
    user = only(instructions, "USER").value[0]
    chown = [c for c in commands(instructions, "RUN") if f"chown {user}" in c.value[0]]
    assert chown and "/data" in chown[0].value[0]
    assert position(instructions, chown[0]) < position(instructions, volume)


def test_the_healthcheck_calls_nr_archiver_health(instructions):
    healthcheck = only(instructions, "HEALTHCHECK")
    assert healthcheck.json
    assert healthcheck.value == ("CMD", "nr-archiver", "health")


def test_the_default_command_is_the_scheduler_in_exec_form(instructions):
    cmd = only(instructions, "CMD")
    assert cmd.json, "shell-form CMD would make /bin/sh PID 1 and swallow SIGTERM"
    assert cmd.value == ("nr-archiver", "schedule")
    assert only(instructions, "STOPSIGNAL").value == ("SIGTERM",)
    assert not commands(instructions, "ENTRYPOINT")


def test_the_image_holds_the_package_migrations_and_queries(instructions):
    copied = {source.rstrip("/") for c in commands(instructions, "COPY") for source in c.value[:-1]}
    assert {"pyproject.toml", "archiver", "migrations", "queries"} <= copied
    assert only(instructions, "WORKDIR").value == ("/app",)


def test_the_environment_points_the_state_under_data(instructions):
    env = env_values(instructions)
    assert env["ARCHIVER_DB_URL"].startswith("sqlite:////data/")
    assert env["ARCHIVER_QUERIES_DIR"] == "/app/queries"
    assert env["ARCHIVER_MIGRATIONS_DIR"] == "/app/migrations"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["ARCHIVER_SCHEDULE"] == "0 * * * *"


@pytest.mark.parametrize("pattern", ["tests/", ".git", "**/__pycache__", "**/*.db"])
def test_dockerignore_keeps_tests_git_caches_and_databases_out(pattern):
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert pattern in ignored


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a KEY=VALUE list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_compose_runs_influxdb_18_with_the_newrelic_database(compose):
    influxdb = compose["services"]["influxdb"]
    assert influxdb["image"] == "influxdb:1.8"
    assert environment(influxdb)["INFLUXDB_DB"] == "newrelic"
    assert any(v.endswith(":/var/lib/influxdb") for v in influxdb["volumes"])


def test_compose_provisions_grafana_with_the_influxdb_datasource(compose):
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana-oss")
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]

    provisioning = REPO / "deploy/grafana/provisioning/datasources/influxdb.yaml"
    (datasource,) = yaml.safe_load(provisioning.read_text(encoding="utf-8"))["datasources"]
    assert datasource["type"] == "influxdb"
    assert datasource["url"] == "http://influxdb:8086"
    assert datasource["jsonData"]["version"] == "InfluxQL"
    assert datasource["jsonData"]["dbName"] == "newrelic"


def test_compose_builds_the_archiver_and_passes_secrets_from_the_environment(compose):
    archiver = compose["services"]["archiver"]
    env = environment(archiver)
    assert archiver["build"] == "."
    assert env["NEW_RELIC_API_KEY"].startswith("${NEW_RELIC_API_KEY:?")
    assert env["NEW_RELIC_ACCOUNT_ID"].startswith("${NEW_RELIC_ACCOUNT_ID")
    assert env["INFLUX_URL"] == "http://influxdb:8086"
    assert "influxdb" in archiver["depends_on"]


def test_compose_keeps_archiver_state_in_a_named_volume(compose):
    archiver = compose["services"]["archiver"]
    state = [v for v in archiver["volumes"] if v.split(":")[1] == "/data"]
    assert state, "no volume mounted at /data"
    volume_name = state[0].split(":")[0]
    assert volume_name in compose["volumes"], f"{volume_name} is not a named volume"
    assert "./queries:/app/queries:ro" in archiver["volumes"]


def test_compose_gives_a_stopping_pass_time_to_finish(compose):
    assert compose["services"]["archiver"]["stop_grace_period"] not in (None, "10s")


def test_compose_hard_codes_no_secret(compose):
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if any(word in key for word in ("KEY", "TOKEN", "PASSWORD", "SECRET")):
                assert value.startswith("${"), f"{name}: {key} is hard-coded"
