"""Settings from the environment (the contract's table), secrets included.

Every secret may come from `NAME` or from a file named by `NAME_FILE`. Each secret value read
here is registered with `archiver.logs` so that it is redacted from every log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from archiver import logs
from archiver.errors import ConfigError
from archiver.schedule.cron import DEFAULT_SCHEDULE

NERDGRAPH_URLS = {
    "US": "https://api.newrelic.com/graphql",
    "EU": "https://api.eu.newrelic.com/graphql",
}
INSIGHTS_URLS = {
    "US": "https://insights-api.newrelic.com",
    "EU": "https://insights-api.eu.newrelic.com",
}
SECRET_VARIABLES = ("NEW_RELIC_API_KEY", "NEW_RELIC_QUERY_KEY", "INFLUX_PASSWORD", "INFLUX_TOKEN")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# The epilog of `nr-archiver --help`; README's Configuration table says more (tests/test_docs.py).
ENVIRONMENT_HELP = """\
environment variables (README.md, "Configuration", says more):
  NEW_RELIC_API_KEY            user key (NRAK-...) for NerdGraph
  NEW_RELIC_ACCOUNT_ID         account of the query files that name none
  NEW_RELIC_REGION             US (default) or EU
  NEW_RELIC_NERDGRAPH_URL      GraphQL URL; overrides the region
  NEW_RELIC_QUERY_KEY          Insights query key (used without an API key)
  NEW_RELIC_INSIGHTS_URL       Insights API URL; overrides the region
  NEW_RELIC_QUERY_TIMEOUT      NerdGraph NRQL timeout, 1-120 s (60)
  NEW_RELIC_ASYNC              true: asynchronous NRQL (Data Plus accounts)
  INFLUX_URL                   InfluxDB URL (http://localhost:8086)
  INFLUX_USERNAME              InfluxDB 1.x user
  INFLUX_PASSWORD              InfluxDB 1.x password
  INFLUX_TOKEN                 InfluxDB 2.x/3.x token
  INFLUX_ORG                   InfluxDB 2.x organisation
  INFLUX_API                   auto (default), v1 or v2
  ARCHIVER_DB_URL              state database (SQLAlchemy URL); --db-url wins
  ARCHIVER_QUERIES_DIR         folder of query files; --queries-dir wins
  ARCHIVER_LOG_LEVEL           DEBUG, INFO (default), WARNING or ERROR
  ARCHIVER_SCHEDULE            cron of schedule (0 * * * *); --cron wins
  ARCHIVER_HEARTBEAT_FILE      heartbeat of schedule, read by health
  ARCHIVER_LEASE_SECONDS       lease of a crashed holder, in seconds (600)
  ARCHIVER_RETRY_BASE_SECONDS  first wait between New Relic retries (1 s)
  ARCHIVER_MIGRATIONS_DIR      where the Alembic migrations are
Each secret (NEW_RELIC_API_KEY, NEW_RELIC_QUERY_KEY, INFLUX_PASSWORD,
INFLUX_TOKEN) may instead be read from the file named by NAME_FILE.
"""


@dataclass(frozen=True)
class Settings:
    new_relic_api_key: str | None = field(default=None, repr=False)
    new_relic_account_id: int | None = None
    nerdgraph_url: str = NERDGRAPH_URLS["US"]
    new_relic_query_key: str | None = field(default=None, repr=False)
    insights_url: str = INSIGHTS_URLS["US"]
    influx_url: str = "http://localhost:8086"
    influx_username: str | None = None
    influx_password: str | None = field(default=None, repr=False)
    influx_token: str | None = field(default=None, repr=False)
    influx_org: str | None = None
    influx_api: str = "auto"
    db_url: str = "sqlite:///archiver.db"
    queries_dir: Path = Path("queries")
    log_level: str = "INFO"
    schedule: str = DEFAULT_SCHEDULE
    lease_seconds: int = 600
    retry_base_seconds: float = 1.0  # first wait between New Relic retries (tests shorten it)
    nerdgraph_timeout: float = 60.0
    query_timeout: int = 60  # NerdGraph's nrql(timeout:), seconds (New Relic's own default: 5)
    async_queries: bool = False  # nrql(async: true), polled until done (Data Plus accounts)
    influx_timeout: float = 30.0

    def require_new_relic_key(self) -> str:
        """The key `run` uses: the user key (NerdGraph), else an Insights query key."""
        key = self.new_relic_api_key or self.new_relic_query_key
        if not key:
            raise ConfigError(
                "NEW_RELIC_API_KEY is not set: give a New Relic user key (NRAK-...) "
                "in NEW_RELIC_API_KEY or a file named by NEW_RELIC_API_KEY_FILE "
                "(or an Insights query key in NEW_RELIC_QUERY_KEY)"
            )
        return key


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """`NAME`, else the content of the file `NAME_FILE`; surrounding whitespace stripped.

    A key pasted with a stray space, or a file or env file with Windows line endings (a
    trailing CR), would otherwise be sent as it is, refused, and echoed in error messages.
    """
    value = (env.get(name) or "").strip()
    file_name = (env.get(f"{name}_FILE") or "").strip()
    if value and file_name:
        raise ConfigError(f"set either {name} or {name}_FILE, not both")
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from None
    if value:
        logs.register_secret(value)
    return value or None


def _account_id(env: Mapping[str, str]) -> int | None:
    raw = env.get("NEW_RELIC_ACCOUNT_ID", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ConfigError(f"NEW_RELIC_ACCOUNT_ID must be a number, not {raw!r}")
    return int(raw)


def _new_relic_url(env: Mapping[str, str], variable: str, by_region: Mapping[str, str]) -> str:
    """`variable` if set, else the URL of NEW_RELIC_REGION."""
    if url := env.get(variable, "").strip():
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{variable} must be an http(s) URL, not {url!r}")
        return url
    region = env.get("NEW_RELIC_REGION", "US").strip().upper() or "US"
    if region not in by_region:
        raise ConfigError(f"NEW_RELIC_REGION must be one of {', '.join(by_region)}, not {region!r}")
    return by_region[region]


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("ARCHIVER_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"ARCHIVER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        )
    return level


def from_env(
    env: Mapping[str, str] | None = None,
    *,
    queries_dir: str | Path | None = None,
    db_url: str | None = None,
) -> Settings:
    """Read the settings; raises ConfigError naming the variable at fault.

    `queries_dir` and `db_url` (the command line's `--queries-dir`, `--db-url`) win over the
    environment.
    """
    env = os.environ if env is None else env
    influx_url = env.get("INFLUX_URL", "").strip() or "http://localhost:8086"
    if not influx_url.startswith(("http://", "https://")):
        raise ConfigError(f"INFLUX_URL must be an http(s) URL, not {influx_url!r}")
    return Settings(
        new_relic_api_key=read_secret(env, "NEW_RELIC_API_KEY"),
        new_relic_account_id=_account_id(env),
        nerdgraph_url=_new_relic_url(env, "NEW_RELIC_NERDGRAPH_URL", NERDGRAPH_URLS),
        new_relic_query_key=read_secret(env, "NEW_RELIC_QUERY_KEY"),
        insights_url=_new_relic_url(env, "NEW_RELIC_INSIGHTS_URL", INSIGHTS_URLS),
        influx_url=influx_url.rstrip("/"),
        influx_username=env.get("INFLUX_USERNAME") or None,
        influx_password=read_secret(env, "INFLUX_PASSWORD"),
        influx_token=read_secret(env, "INFLUX_TOKEN"),
        influx_org=env.get("INFLUX_ORG", "").strip() or None,
        influx_api=_choice(env, "INFLUX_API", ("auto", "v1", "v2"), "auto"),
        db_url=db_url or env.get("ARCHIVER_DB_URL", "").strip() or "sqlite:///archiver.db",
        queries_dir=Path(queries_dir or env.get("ARCHIVER_QUERIES_DIR", "").strip() or "queries"),
        log_level=_log_level(env),
        schedule=env.get("ARCHIVER_SCHEDULE", "").strip() or DEFAULT_SCHEDULE,
        lease_seconds=_positive_int(env, "ARCHIVER_LEASE_SECONDS", 600),
        retry_base_seconds=_positive_float(env, "ARCHIVER_RETRY_BASE_SECONDS", 1.0),
        query_timeout=_query_timeout(env),
        async_queries=_choice(env, "NEW_RELIC_ASYNC", ("true", "false"), "false") == "true",
    )


QUERY_TIMEOUT_RANGE = (1, 120)  # seconds; New Relic's clients take no more than 120


def _query_timeout(env: Mapping[str, str]) -> int:
    raw = env.get("NEW_RELIC_QUERY_TIMEOUT", "").strip()
    if not raw:
        return 60
    low, high = QUERY_TIMEOUT_RANGE
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(
            f"NEW_RELIC_QUERY_TIMEOUT must be a whole number of seconds from {low} to {high}, "
            f"not {raw!r}"
        )
    return int(raw)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)
