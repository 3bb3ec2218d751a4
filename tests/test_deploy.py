"""The deployment files: Kubernetes manifests and the PostgreSQL compose file hold together.

Structure is checked with PyYAML against what the archiver expects (its commands, variables,
secret files and query folder); where `kubernetes-validate` and `check-jsonschema` are
installed, the files are also validated against the Kubernetes and Compose schemas.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from croniter import croniter

from archiver.arguments import build_parser
from archiver.pipeline.sharding import Shard
from archiver.queries.load import load_files

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.postgres.yml"
NEW_RELIC_MAX_CONCURRENT = 5  # New Relic's guidance for concurrent NRQL queries per account
NEW_RELIC_QUERIES_PER_MINUTE = 3000  # per account, shared with dashboards and alerts
SECRET_VARIABLES = {"NEW_RELIC_API_KEY", "INFLUX_PASSWORD", "INFLUX_TOKEN", "ARCHIVER_DB_URL"}


def documents(name: str) -> list[dict]:
    return list(yaml.safe_load_all((KUBERNETES / name).read_text(encoding="utf-8")))


def one(name: str, kind: str) -> dict:
    (document,) = [d for d in documents(name) if d["kind"] == kind]
    return document


def named(items: list[dict], name: str) -> dict:
    (item,) = [item for item in items if item["name"] == name]
    return item


@pytest.fixture(scope="module")
def cronjob() -> dict:
    return one("cronjob.yaml", "CronJob")


@pytest.fixture(scope="module")
def job(cronjob) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]


@pytest.fixture(scope="module")
def pod(job) -> dict:
    return job["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (archiver,) = pod["containers"]
    return archiver


def option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


# -- the CronJob -----------------------------------------------------------------------------------


def test_cronjob_runs_hourly_and_never_overlaps_itself(cronjob, job):
    spec = cronjob["spec"]
    assert cronjob["apiVersion"] == "batch/v1"
    start = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    ticks = croniter(spec["schedule"], start)
    assert [ticks.get_next(datetime) for _ in range(3)] == [
        datetime(2026, 11, 26, hour, 0, tzinfo=UTC) for hour in (11, 12, 13)
    ]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] < 3600
    assert job["activeDeadlineSeconds"] < 3600  # done before the next run is due


def test_each_pod_of_a_run_exports_its_own_shard(job, container):
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] >= 2
    args = container["args"]
    assert args[0] == "run"
    index_variable, count = re.fullmatch(r"\$\((\w+)\)/(\d+)", option(args, "--shard", "")).groups()
    assert int(count) == job["completions"]
    index = named(container["env"], index_variable)["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    for i in range(job["completions"]):
        pod_args = [arg.replace(f"$({index_variable})", str(i)) for arg in args]
        assert build_parser().parse_args(pod_args).shard == Shard(i, int(count))


def test_the_pods_together_stay_within_new_relics_limits(job, container):
    args, pods = container["args"], job["parallelism"]
    assert pods * int(option(args, "--max-concurrent", "5")) <= NEW_RELIC_MAX_CONCURRENT
    assert pods * int(option(args, "--requests-per-minute", "1000")) < NEW_RELIC_QUERIES_PER_MINUTE


def test_secrets_come_from_the_secret_never_from_plain_values(pod, container):
    env = {item["name"]: item for item in container["env"]}
    for name in SECRET_VARIABLES:
        assert "value" not in env.get(name, {}), name
    assert env["ARCHIVER_DB_URL"]["valueFrom"]["secretKeyRef"]["name"] == "nr-archiver"
    secret = one("secret.example.yaml", "Secret")
    mount = named(container["volumeMounts"], "secrets")
    volume = named(pod["volumes"], "secrets")["secret"]
    assert volume["secretName"] == secret["metadata"]["name"] == "nr-archiver"
    assert mount["readOnly"] is True
    files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["items"]}
    for variable in ("NEW_RELIC_API_KEY_FILE", "INFLUX_PASSWORD_FILE"):
        assert files[env[variable]["value"]] in secret["stringData"], variable
    assert env["ARCHIVER_DB_URL"]["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
    assert secret["stringData"]["db-url"].startswith("postgresql+psycopg://")


def test_query_files_come_from_the_configmap(pod, container):
    env = {item["name"]: item for item in container["env"]}
    mount = named(container["volumeMounts"], "queries")
    assert mount["mountPath"] == env["ARCHIVER_QUERIES_DIR"]["value"] == "/app/queries"
    assert mount["readOnly"] is True
    queries = named(pod["volumes"], "queries")["configMap"]["name"]
    assert queries == one_configmap("nr-archiver-queries")["metadata"]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": "nr-archiver-settings"}}]


def one_configmap(name: str) -> dict:
    (configmap,) = [d for d in documents("configmap.yaml") if d["metadata"]["name"] == name]
    return configmap


def test_the_example_query_files_are_valid(tmp_path):
    data = one_configmap("nr-archiver-queries")["data"]
    assert data
    for file_name, content in data.items():
        (tmp_path / file_name).write_text(content, encoding="utf-8")
    loaded = load_files(sorted(tmp_path.iterdir()))
    assert loaded.problems == []
    assert len(loaded.queries) == len(data)


def test_settings_hold_no_secret_and_a_lease_shorter_than_the_schedule():
    settings = one_configmap("nr-archiver-settings")["data"]
    assert not SECRET_VARIABLES & set(settings)
    assert all(isinstance(value, str) for value in settings.values())
    assert 60 <= int(settings["ARCHIVER_LEASE_SECONDS"]) < 3600


@pytest.mark.parametrize("name", ["cronjob.yaml", "db-upgrade-job.yaml"])
def test_pods_run_as_non_root_on_a_read_only_root_filesystem(name):
    (workload,) = documents(name)
    spec = workload["spec"]
    pod = (spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec)["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
        # Python and the heartbeat write to /tmp: a writable emptyDir there.
        tmp = named(container["volumeMounts"], "tmp")
        assert tmp["mountPath"] == "/tmp"
        assert "emptyDir" in named(pod["volumes"], "tmp")


def test_the_db_upgrade_job_runs_the_migrations():
    job = one("db-upgrade-job.yaml", "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.db_command) == ("db", "upgrade")
    url = named(container["env"], "ARCHIVER_DB_URL")["valueFrom"]["secretKeyRef"]
    assert url == {"name": "nr-archiver", "key": "db-url"}


# -- docker compose ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_runs_several_schedulers_on_one_postgresql(compose):
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["influxdb"]["image"] == "influxdb:1.8"
    archiver = services["archiver"]
    replicas = archiver["deploy"]["replicas"]
    assert replicas >= 2
    args = archiver["command"][1:]
    assert archiver["command"][0] == "nr-archiver" and args[0] == "schedule"
    build_parser().parse_args(args)
    assert replicas * int(option(args, "--max-concurrent", "5")) <= NEW_RELIC_MAX_CONCURRENT
    url = archiver["environment"]["ARCHIVER_DB_URL"]
    assert re.fullmatch(r"postgresql\+psycopg://archiver:\$\{[^}]+\}@postgres:5432/archiver", url)
    assert archiver["depends_on"]["db-upgrade"]["condition"] == "service_completed_successfully"
    assert services["db-upgrade"]["command"] == ["nr-archiver", "db", "upgrade"]
    assert services["db-upgrade"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_mounts_the_users_queries_never_the_examples(compose):
    for service in ("archiver", "db-upgrade"):
        (mount,) = [v for v in compose["services"][service]["volumes"] if ":/app/queries" in v]
        source, target, mode = mount.rsplit(":", 2)
        assert (target, mode) == ("/app/queries", "ro")
        assert source == "${NR_ARCHIVER_QUERIES:-../my-queries}", "not the examples in ../queries"


def test_compose_takes_secrets_from_the_environment(compose):
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in SECRET_VARIABLES | {"POSTGRES_PASSWORD"}:
                assert "${" in str(value), f"{name}: {variable} holds a literal secret"


# -- the README and the schemas ------------------------------------------------------------


def test_the_readme_explains_every_file():
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in [*sorted(KUBERNETES.glob("*.yaml")), COMPOSE]:
        assert path.name in readme, path.name
    for topic in ("lease", "--shard", "ARCHIVER_LEASE_SECONDS", "SIGKILL", "SIGTERM"):
        assert topic in readme, topic


def test_manifests_match_the_kubernetes_schema():
    validate = pytest.importorskip("kubernetes_validate")
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in documents(path.name):
            validate.validate(document, "1.29.0", strict=True)


def test_compose_file_matches_the_compose_schema():
    checker = shutil.which("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema is not installed")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
