"""`make demo`: the whole pipeline on this machine, with no New Relic account.

Starts a throwaway influxd (Debian's 1.6.7, data under .demo/) and the in-repo fake NerdGraph
server, then runs the real `nr-archiver` commands on the example files in queries/ and shows
what landed in InfluxDB. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fakes.nerdgraph import FakeNerdGraph  # noqa: E402
from tests.influxd import running_influxd  # noqa: E402

WORK = REPO / ".demo"


def say(text: str) -> None:
    print(f"\n\033[1m{text}\033[0m", flush=True)


def archiver(env: dict[str, str], *args: str) -> int:
    print(f"$ nr-archiver {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "archiver", *args], env=env, cwd=REPO).returncode


def show(influx, database: str) -> None:
    for policy in influx.query(f'SHOW RETENTION POLICIES ON "{database}"'):
        for row in influx.query("SHOW MEASUREMENTS", db=database):
            source = f'"{database}"."{policy["name"]}"."{row["name"]}"'
            counts = influx.query(f"SELECT count(*) FROM {source}", db=database)
            if counts:
                points = max(v for k, v in counts[0].items() if k.startswith("count_"))
                print(f"  {policy['name']:<10} {row['name']:<20} {points:>6} points")
    print("\n  newest points of nr_transaction for the app 'Zürich ☃ 東京':")
    rows = influx.query(
        'SELECT * FROM "newrelic"."raw_30d"."nr_transaction" '
        "WHERE \"appName\" = 'Zürich ☃ 東京' ORDER BY time DESC LIMIT 3",
        db=database,
    )
    for row in rows:
        print(f"  {row}")


def main() -> int:
    if shutil.which("influxd") is None:
        print(
            "influxd is not installed: run `make demo` (it installs it) or "
            "`apt-get install -y influxdb`",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "influxd").mkdir(parents=True)
    say("Starting a local InfluxDB and the fake New Relic NerdGraph server")
    with running_influxd(WORK / "influxd") as influx, FakeNerdGraph().start() as nerdgraph:
        print(f"  InfluxDB:  {influx.url} (data in {WORK / 'influxd'})")
        print(f"  NerdGraph: {nerdgraph.url} (fake, deterministic data)")
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "NEW_RELIC_API_KEY": nerdgraph.api_key,
            "NEW_RELIC_ACCOUNT_ID": "1234567",
            "NEW_RELIC_NERDGRAPH_URL": nerdgraph.url,
            "INFLUX_URL": influx.url,
            "ARCHIVER_DB_URL": f"sqlite:///{WORK / 'archiver.db'}",
            "ARCHIVER_QUERIES_DIR": str(REPO / "queries"),
        }
        say("1. Check the query files")
        if archiver(env, "validate") != 0:
            return 1
        say("2. First run: every query starts one day back")
        first = archiver(env, "run")
        say("3. Second run: only what is new since the first (plus each file's lookback)")
        second = archiver(env, "run")
        say("4. Backfill two days of logins (New Relic still holds 8)")
        backfill = archiver(env, "run", "--since", "2d", "--query", "logins")
        say("5. Where every query stands")
        archiver(env, "status")
        say("6. What landed in InfluxDB (database newrelic)")
        show(influx, "newrelic")
        print(f"\n  {len(nerdgraph.requests)} requests reached the fake NerdGraph server.")
    return max(first, second, backfill)


if __name__ == "__main__":
    raise SystemExit(main())
