# nr-archiver: the hourly copy job, as a container (see docker-compose.yml for a full stack).
#
#   docker build -t nr-archiver .
#   docker network create nr-archiver
#   docker run -d --name influxdb --network nr-archiver -v influxdb-data:/var/lib/influxdb influxdb:1.8
#   docker run -d --name nr-archiver --network nr-archiver \
#     -e NEW_RELIC_API_KEY -e NEW_RELIC_ACCOUNT_ID -e INFLUX_URL=http://influxdb:8086 \
#     -v nr-archiver-state:/data -v "$PWD/my-queries:/app/queries:ro" --stop-timeout 120 nr-archiver
#
# /app/queries, the folder read, is empty in the image: mount your query files there. The
# repository's example files are in /app/examples/queries, for reference only (never read).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 archiver \
    && useradd --system --uid 10001 --gid archiver --home-dir /app --shell /usr/sbin/nologin archiver \
    && mkdir -p /data /app/queries \
    && chown archiver:archiver /data

# The package is built from a copy that does not stay in /app; the wheel carries the
# migrations (archiver/migrations), so the installed command finds them on its own.
COPY pyproject.toml README.md /tmp/src/
COPY archiver/ /tmp/src/archiver/
COPY migrations/ /tmp/src/migrations/
RUN pip install --no-cache-dir "/tmp/src[postgres]" && rm -rf /tmp/src

WORKDIR /app
# The examples of the repository's queries/, kept apart from /app/queries (empty above) so a
# container without your own query files exports nothing rather than the examples.
COPY queries/ examples/queries/

ENV ARCHIVER_DB_URL=sqlite:////data/archiver.db \
    ARCHIVER_QUERIES_DIR=/app/queries \
    ARCHIVER_SCHEDULE="0 * * * *" \
    ARCHIVER_HEARTBEAT_FILE=/tmp/nr-archiver.heartbeat

# Declared after the chown above: a new named volume starts as a copy of this directory,
# owner included, so the non-root user can write the state database into it.
VOLUME ["/data"]
USER archiver

# Unhealthy once the next scheduled run is overdue by a schedule period plus a margin.
HEALTHCHECK --interval=1m --timeout=10s --start-period=1m --retries=3 \
    CMD ["nr-archiver", "health"]

# Exec-form CMD: Python is PID 1 and receives SIGTERM itself. No tini is needed: the scheduler
# installs its own SIGTERM/SIGINT handlers (PID 1 gets no default ones) and starts no child
# processes, so there are no zombies to reap. On SIGTERM a pass finishes its current write
# before exiting, which can take longer than Docker's default 10 s: give `docker stop --time`
# or compose's `stop_grace_period` a couple of minutes.
STOPSIGNAL SIGTERM
CMD ["nr-archiver", "schedule"]
