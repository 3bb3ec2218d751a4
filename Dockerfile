# nr-archiver: the hourly copy job, as a container (see docker-compose.yml for a full stack).
#
#   docker build -t nr-archiver .
#   docker run -d -e NEW_RELIC_API_KEY -e NEW_RELIC_ACCOUNT_ID -e INFLUX_URL=http://influxdb:8086 \
#     -v archiver-state:/data -v "$PWD/queries:/app/queries:ro" --stop-timeout 120 nr-archiver
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 archiver \
    && useradd --system --uid 10001 --gid archiver --home-dir /app --shell /usr/sbin/nologin archiver \
    && mkdir /data \
    && chown archiver:archiver /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY archiver/ archiver/
RUN pip install --no-cache-dir ".[postgres]" && rm -rf build *.egg-info
COPY migrations/ migrations/
COPY queries/ queries/

ENV ARCHIVER_DB_URL=sqlite:////data/archiver.db \
    ARCHIVER_QUERIES_DIR=/app/queries \
    ARCHIVER_MIGRATIONS_DIR=/app/migrations \
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
