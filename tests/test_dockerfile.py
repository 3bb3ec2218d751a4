"""The container files keep their promises: image shape, compose stack, Grafana data source."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ROOT_USERS = {"root", "0", "0:0", "root:root"}
WHEEL_SOURCES = {"pyproject.toml", "README.md", "archiver", "migrations"}  # tests/test_install.py
EXAMPLES = "/app/examples/queries"


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
    assert any(
        'pip install --no-cache-dir "/tmp/src[postgres]"' in run.value[0] for run in installs
    )


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


def copies(instructions: list[dockerfile.Command]) -> list[tuple[str, PurePosixPath, int]]:
    """(source, absolute destination in the image, position) of every COPY source."""
    found, workdir = [], PurePosixPath("/")
    for i, command in enumerate(instructions):
        if command.cmd == "WORKDIR":
            workdir = workdir / command.value[0]
        elif command.cmd == "COPY":
            *sources, destination = command.value
            found += [(source.rstrip("/"), workdir / destination, i) for source in sources]
    return found


def test_the_package_is_installed_from_exactly_what_the_wheel_is_made_of(instructions):
    """The sources the wheel test builds from, copied into one folder, installed, removed."""
    (install,) = [c for c in commands(instructions, "RUN") if "pip install" in c.value[0]]
    before = {s: d for s, d, i in copies(instructions) if i < position(instructions, install)}
    assert set(before) == WHEEL_SOURCES
    build = before["pyproject.toml"]  # the folder the files are copied into
    assert before == {
        name: build / name if (REPO / name).is_dir() else build for name in WHEEL_SOURCES
    }
    assert f'pip install --no-cache-dir "{build}[postgres]"' in install.value[0]
    assert f"rm -rf {build}" in install.value[0]
    assert PurePosixPath("/app") not in [build, *build.parents], "sources left in /app"


def test_the_examples_are_in_the_image_apart_from_the_empty_queries_folder(instructions):
    env = env_values(instructions)
    queries = PurePosixPath(env["ARCHIVER_QUERIES_DIR"])
    assert queries == PurePosixPath("/app/queries")
    copied = {source: destination for source, destination, _ in copies(instructions)}
    assert copied["queries"] == PurePosixPath(EXAMPLES)
    assert not [d for d in copied.values() if d == queries or queries in d.parents], (
        "the image must not ship query files in the folder it reads"
    )
    created = [
        c for c in commands(instructions, "RUN") if re.search(r"mkdir\b.*/app/queries", c.value[0])
    ]
    assert created, "the empty queries folder is not created"


def test_the_environment_points_the_state_under_data(instructions):
    env = env_values(instructions)
    assert env["ARCHIVER_DB_URL"].startswith("sqlite:////data/")
    assert env["ARCHIVER_QUERIES_DIR"] == "/app/queries"
    assert "ARCHIVER_MIGRATIONS_DIR" not in env, "the installed package carries its migrations"
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


def test_compose_mounts_the_users_queries_never_the_examples(compose):
    archiver = compose["services"]["archiver"]
    (mount,) = [v for v in archiver["volumes"] if ":/app/queries" in v]
    source, target, mode = mount.rsplit(":", 2)
    assert (target, mode) == ("/app/queries", "ro")
    assert source == "${NR_ARCHIVER_QUERIES:-./my-queries}"
    assert "command" not in archiver, "the image's CMD (the scheduler) is what runs"


def test_compose_gives_a_stopping_pass_time_to_finish(compose):
    assert compose["services"]["archiver"]["stop_grace_period"] not in (None, "10s")


def test_compose_hard_codes_no_secret(compose):
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if any(word in key for word in ("KEY", "TOKEN", "PASSWORD", "SECRET")):
                assert value.startswith("${"), f"{name}: {key} is hard-coded"


# -- the `docker run` examples ---------------------------------------------------------------


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell snippet, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def readme_snippet(heading: str) -> str:
    section = (REPO / "README.md").read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def dockerfile_snippet() -> str:
    """The commands in the Dockerfile's header comment (the lines indented under `#`)."""
    header = (REPO / "Dockerfile").read_text(encoding="utf-8").split("\nFROM ", 1)[0]
    return "\n".join(line[1:] for line in header.splitlines() if line.startswith("#   "))


def option(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == name]


@pytest.mark.parametrize(
    "snippet",
    [readme_snippet("Deploying hourly"), dockerfile_snippet()],
    ids=["README", "Dockerfile"],
)
def test_docker_run_examples_reach_influxdb_and_mount_the_users_queries(snippet):
    commands_ = [words for words in shell_commands(snippet) if words[:1] == ["docker"]]
    runs = [words for words in commands_ if words[1:2] == ["run"] and "-d" in words]
    (archiver,) = [words for words in runs if words[-1] == "nr-archiver"]
    (influx_url,) = [e for e in option(archiver, "-e") if e.startswith("INFLUX_URL=")]
    host = re.match(r"INFLUX_URL=https?://([^:/]+)", influx_url).group(1)
    networks = option(archiver, "--network")
    assert networks, f"no network on which {host!r} resolves"
    network = networks[0]
    assert ["docker", "network", "create", network] in commands_
    influxdb = [words for words in runs if option(words, "--name") == [host]]
    assert influxdb and option(influxdb[0], "--network") == [network], (
        f"nothing named {host!r} on the network {network!r}"
    )
    (queries,) = [v for v in option(archiver, "-v") if ":/app/queries" in v]
    source = queries.split(":", 1)[0]
    assert not source.rstrip("/").endswith("/queries"), "mounts the examples as the live folder"
