"""In-process CLI tests: `archiver.cli.main([...])` with the environment of the e2e tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import pytest

from archiver.cli import main
from archiver.schedule import cron
from tests.e2e import Cli, Item, Spec, cli_env

# The variables the archiver reads: a test's environment has exactly those of `Cli.env`.
SETTINGS_PREFIXES = ("ARCHIVER_", "NEW_RELIC_", "INFLUX_")


@pytest.fixture
def env(monkeypatch, fake_nr, influxd, queries_dir, state_path) -> dict[str, str]:
    """The environment `Cli` gets (fake NerdGraph, real influxd, SQLite state), set in-process."""
    values = cli_env(
        nerdgraph_url=fake_nr.url,
        api_key=fake_nr.api_key,
        influx_url=influxd.url,
        db_url=f"sqlite:///{state_path}",
        queries=queries_dir,
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cron, "install_signal_handlers", lambda stop: None)
    return values


def tx(database: str, **extra: object) -> Spec:
    return Spec(
        name="tx",
        nrql="SELECT average(duration), count(*) FROM Transaction FACET appName, host",
        event_type="Transaction",
        facets=("appName", "host"),
        items=(Item("average", "duration", "average.duration"), Item("count", None, "count")),
        measurement="nr_tx",
        interval="1 minute",
        interval_seconds=60,
        database=database,
        extra=extra,
    )


@dataclass
class InProcessCli(Cli):
    """`Cli` with `archiver.cli.main` in this process instead of `python -m archiver`: for the
    tests where a separate process adds nothing (exit codes, messages, what landed)."""

    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str, timeout: float = 120, **extra_env: str):
        self.capsys.readouterr()
        with self.monkeypatch.context() as patch:
            patch.chdir(self.cwd)
            for name in list(os.environ):
                if name.startswith(SETTINGS_PREFIXES):
                    patch.delenv(name)
            for name, value in {**self.env, **extra_env}.items():
                patch.setenv(name, value)
            patch.setattr(cron, "install_signal_handlers", lambda stop: None)
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors, as the process would end
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        captured = self.capsys.readouterr()
        return subprocess.CompletedProcess(["nr-archiver", *args], code, captured.out, captured.err)
