"""Settings: the environment (the contract's table), secrets and command-line options, read once.

One typed object, `Settings`, built by `load()` at start-up (and afresh at every pass of
`schedule`); every module receives what it needs from it and none reads `os.environ` itself.
Every secret may come from `NAME` or from a file named by `NAME_FILE`. Each secret value read
here is registered with `archiver.logs` so that it is redacted from every log line. A bad value
raises ConfigError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from archiver import logs
from archiver.errors import ConfigError

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
DEFAULT_SCHEDULE = "0 * * * *"
DEFAULT_HEARTBEAT_FILE = "/tmp/nr-archiver.heartbeat"
QUERY_TIMEOUT_RANGE = (1, 120)  # seconds; New Relic's clients take no more than 120

# The one-line help of each variable is `arguments.ENVIRONMENT_HELP`, the epilog of `--help`
# (here it would make `--help` import pydantic); tests/test_settings.py checks it against Settings.


def _variable(name: str, default: Any = None, *, secret: bool = False) -> Any:
    """A field read from the environment variable `name`."""
    return Field(default, validation_alias=name, repr=not secret)


def _secret_file(secret: str) -> Any:
    """A field read from `secret`_FILE: the file that holds the secret."""
    return Field(None, validation_alias=f"{secret}_FILE")


class Settings(BaseModel):
    """Everything the environment and the command line configure, validated once.

    A pydantic model whose fields are read from the variables named by their aliases (`load`):
    every variable is a plain value, so pydantic-settings (which this used to be) had nothing to
    add but its import: importing and loading the settings took 216 ms of wall time with it,
    198 without (a new process each, best of 12 interleaved, 2026-11-29).
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, validate_default=True
    )

    influx_url: str = _variable("INFLUX_URL", "http://localhost:8086")
    new_relic_api_key: str | None = _variable("NEW_RELIC_API_KEY", secret=True)
    new_relic_api_key_file: Path | None = _secret_file("NEW_RELIC_API_KEY")
    new_relic_account_id: int | None = _variable("NEW_RELIC_ACCOUNT_ID")
    new_relic_region: str = _variable("NEW_RELIC_REGION", "US")  # picks the two URLs below
    nerdgraph_url: str = _variable("NEW_RELIC_NERDGRAPH_URL", NERDGRAPH_URLS["US"])
    new_relic_query_key: str | None = _variable("NEW_RELIC_QUERY_KEY", secret=True)
    new_relic_query_key_file: Path | None = _secret_file("NEW_RELIC_QUERY_KEY")
    insights_url: str = _variable("NEW_RELIC_INSIGHTS_URL", INSIGHTS_URLS["US"])
    influx_username: str | None = _variable("INFLUX_USERNAME")
    influx_password: str | None = _variable("INFLUX_PASSWORD", secret=True)
    influx_password_file: Path | None = _secret_file("INFLUX_PASSWORD")
    influx_token: str | None = _variable("INFLUX_TOKEN", secret=True)
    influx_token_file: Path | None = _secret_file("INFLUX_TOKEN")
    influx_org: str | None = _variable("INFLUX_ORG")
    influx_api: str = _variable("INFLUX_API", "auto")
    db_url: str = _variable("ARCHIVER_DB_URL", "sqlite:///archiver.db")
    queries_dir: Path = _variable("ARCHIVER_QUERIES_DIR", Path("queries"))
    log_level: str = _variable("ARCHIVER_LOG_LEVEL", "INFO")
    schedule: str = _variable("ARCHIVER_SCHEDULE", DEFAULT_SCHEDULE)
    heartbeat_file: Path = _variable("ARCHIVER_HEARTBEAT_FILE", Path(DEFAULT_HEARTBEAT_FILE))
    lease_seconds: int = _variable("ARCHIVER_LEASE_SECONDS", 600)
    # first wait between New Relic retries (tests shorten it)
    retry_base_seconds: float = _variable("ARCHIVER_RETRY_BASE_SECONDS", 1.0)
    migrations_dir: Path | None = _variable("ARCHIVER_MIGRATIONS_DIR")
    # NerdGraph's nrql(timeout:), seconds (New Relic's own default: 5)
    query_timeout: int = _variable("NEW_RELIC_QUERY_TIMEOUT", 60)
    # nrql(async: true), polled until done (Data Plus accounts)
    async_queries: bool = _variable("NEW_RELIC_ASYNC", False)
    nerdgraph_timeout: float = 60.0
    influx_timeout: float = 30.0

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        """Blank variables are unset; secrets from NAME or NAME_FILE; URLs of the region."""
        if not isinstance(data, dict):
            return data
        data = {
            key: value.strip() if isinstance(value, str) else value for key, value in data.items()
        }
        data = {key: value for key, value in data.items() if value != ""}
        for name in SECRET_VARIABLES:
            if name in data or f"{name}_FILE" in data:
                data[name] = read_secret(data, name)
        for variable, by_region in (
            ("NEW_RELIC_NERDGRAPH_URL", NERDGRAPH_URLS),
            ("NEW_RELIC_INSIGHTS_URL", INSIGHTS_URLS),
        ):
            if variable in data:
                _http_url(variable, data[variable])
            elif "NEW_RELIC_REGION" in data:
                data["NEW_RELIC_REGION"] = _region(data["NEW_RELIC_REGION"], by_region)
                data[variable] = by_region[data["NEW_RELIC_REGION"]]
        return data

    @field_validator("influx_url", mode="before")
    @classmethod
    def _influx_url(cls, value: Any) -> Any:
        return _http_url("INFLUX_URL", value).rstrip("/")

    @field_validator("new_relic_account_id", mode="before")
    @classmethod
    def _account_id(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.isdigit():
            raise ConfigError(f"NEW_RELIC_ACCOUNT_ID must be a number, not {value!r}")
        return value

    @field_validator("influx_api", mode="before")
    @classmethod
    def _influx_api(cls, value: Any) -> Any:
        return _choice("INFLUX_API", value.lower(), ("auto", "v1", "v2"))

    @field_validator("async_queries", mode="before")
    @classmethod
    def _async(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _choice("NEW_RELIC_ASYNC", value.lower(), ("true", "false")) == "true"
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return _choice("ARCHIVER_LOG_LEVEL", value.upper(), LOG_LEVELS)

    @field_validator("lease_seconds", mode="before")
    @classmethod
    def _lease_seconds(cls, value: Any) -> Any:
        if isinstance(value, str) and (not value.isdigit() or int(value) < 1):
            raise ConfigError(
                f"ARCHIVER_LEASE_SECONDS must be a positive whole number, not {value!r}"
            )
        return value

    @field_validator("retry_base_seconds", mode="before")
    @classmethod
    def _retry_base_seconds(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise ConfigError(
                f"ARCHIVER_RETRY_BASE_SECONDS must be a positive number of seconds, not {value!r}"
            )
        return seconds

    @field_validator("query_timeout", mode="before")
    @classmethod
    def _query_timeout(cls, value: Any) -> Any:
        low, high = QUERY_TIMEOUT_RANGE
        if isinstance(value, str) and (not value.isdigit() or not low <= int(value) <= high):
            raise ConfigError(
                f"NEW_RELIC_QUERY_TIMEOUT must be a whole number of seconds from {low} to {high}, "
                f"not {value!r}"
            )
        return value

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


def load(
    env: Mapping[str, str] | None = None,
    *,
    queries_dir: str | Path | None = None,
    db_url: str | None = None,
    schedule: str | None = None,
) -> Settings:
    """Read the settings; raises ConfigError naming the variable at fault.

    `queries_dir`, `db_url` and `schedule` (the command line's `--queries-dir`, `--db-url`,
    `--cron`) win over the environment.
    """
    environ = os.environ if env is None else env
    values = {name: environ[name] for name in _VARIABLES if name in environ}
    overrides = {"queries_dir": queries_dir, "db_url": db_url, "schedule": schedule}
    for name, value in overrides.items():
        if value:
            values[Settings.model_fields[name].validation_alias] = value
    return Settings(**values)


# The variables `load` reads: every field's alias (case-sensitive, as the variables are).
_VARIABLES = tuple(
    field.validation_alias
    for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, str)
)


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """`NAME`, else the content of the file `NAME_FILE`; surrounding whitespace stripped.

    A key pasted with a stray space, or a file or env file with Windows line endings (a
    trailing CR), would otherwise be sent as it is, refused, and echoed in error messages.
    """
    value = (env.get(name) or "").strip()
    file_name = str(env.get(f"{name}_FILE") or "").strip()
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


def _http_url(variable: str, url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{variable} must be an http(s) URL, not {url!r}")
    return url


def _region(raw: str, by_region: Mapping[str, str]) -> str:
    region = raw.upper()
    if region not in by_region:
        raise ConfigError(f"NEW_RELIC_REGION must be one of {', '.join(by_region)}, not {region!r}")
    return region


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value
