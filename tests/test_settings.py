"""The one settings object: environment variables, defaults and command-line overrides."""

import re

import pytest

from archiver.arguments import ENVIRONMENT_HELP
from archiver.errors import ConfigError
from archiver.settings import (
    INSIGHTS_URLS,
    NERDGRAPH_URLS,
    SECRET_VARIABLES,
    Settings,
    load,
)


@pytest.mark.parametrize(
    ("env", "nerdgraph", "insights"),
    [
        pytest.param({}, NERDGRAPH_URLS["US"], INSIGHTS_URLS["US"], id="default-us"),
        pytest.param(
            {"NEW_RELIC_REGION": " eu "}, NERDGRAPH_URLS["EU"], INSIGHTS_URLS["EU"], id="eu"
        ),
        pytest.param(
            {"NEW_RELIC_REGION": "EU", "NEW_RELIC_NERDGRAPH_URL": "http://fake:1/graphql"},
            "http://fake:1/graphql",
            INSIGHTS_URLS["EU"],
            id="url-wins",
        ),
    ],
)
def test_region_picks_the_new_relic_urls(env, nerdgraph, insights):
    settings = load(env)
    assert (settings.nerdgraph_url, settings.insights_url) == (nerdgraph, insights)


def test_an_unknown_region_names_the_variable():
    with pytest.raises(ConfigError, match=r"^NEW_RELIC_REGION must be one of US, EU, not 'AP'$"):
        load({"NEW_RELIC_REGION": "ap"})


def test_command_line_options_win_over_the_environment(tmp_path):
    env = {"ARCHIVER_QUERIES_DIR": "env-q", "ARCHIVER_DB_URL": "sqlite:///env.db"}
    env["ARCHIVER_SCHEDULE"] = "*/5 * * * *"
    assert (load(env).queries_dir.name, load(env).schedule) == ("env-q", "*/5 * * * *")
    settings = load(env, queries_dir=tmp_path, db_url="sqlite:///cli.db", schedule="0 0 * * *")
    assert (settings.queries_dir, settings.db_url, settings.schedule) == (
        tmp_path,
        "sqlite:///cli.db",
        "0 0 * * *",
    )


def test_blank_variables_are_unset_and_secrets_stay_out_of_repr():
    settings = load({"INFLUX_URL": "  ", "INFLUX_USERNAME": "", "INFLUX_TOKEN": " tok-123 \r\n"})
    assert (settings.influx_url, settings.influx_username) == ("http://localhost:8086", None)
    assert settings.influx_token == "tok-123"
    assert "tok-123" not in repr(settings)


def test_every_variable_of_the_help_is_a_settings_field():
    documented = set(re.findall(r"^  ([A-Z][A-Z0-9_]+)\s", ENVIRONMENT_HELP, flags=re.MULTILINE))
    read = {field.validation_alias for field in Settings.model_fields.values()}
    assert documented <= read, f"not read by Settings: {sorted(documented - read)}"
    assert {f"{name}_FILE" for name in SECRET_VARIABLES} <= read
