"""Where influxdb-client's sink keeps a target: 2.x buckets with DBRP mappings, 3.x databases.

The names (`db`, `db/rp`) and why are in `archiver.sinks.influx_client`. `Targets` makes a
missing 2.x bucket with the query file's retention, maps `"db"."rp"` to it for InfluxQL, and
finds the organization's ID once; every call goes through the sink's retry policy and error
classification (`with_retries`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from influxdb_client import BucketRetentionRules, InfluxDBClient
from influxdb_client.domain.bucket import Bucket
from influxdb_client.domain.dbrp_create import DBRPCreate
from influxdb_client.service.dbr_ps_service import DBRPsService

from archiver.errors import ConfigError, InfluxError
from archiver.sinks.base import DEFAULT_RP, RetentionPolicy
from archiver.timeparse import influxdb_duration_seconds

log = logging.getLogger(__name__)

ORG_ID = re.compile(r"[0-9a-f]{16}")
WithRetries = Callable[[Callable[[], Any], str], tuple[Any, int]]


def bucket_name(database: str, retention_policy: str | None) -> str:
    """`db` for the default retention policy, else `db/rp` (the names `influxd upgrade` gives)."""
    return f"{database}/{retention_policy}" if retention_policy else database


class Targets:
    """The buckets, DBRP mappings and organization of one InfluxDB 2.x (database names on 3.x)."""

    def __init__(
        self, client: InfluxDBClient, *, org: str, display_url: str, with_retries: WithRetries
    ) -> None:
        self._client = client
        self.org = org
        self.display_url = display_url
        self._with_retries = with_retries
        self._org_id: str | None = None
        self._org_lock = threading.Lock()

    def database_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy:
        name = bucket_name(database, retention_policy)
        if retention_duration is not None:
            log.info(
                'InfluxDB 3 database "%s": retention_duration %s only limits what is exported; '
                "set the database's own retention in InfluxDB",
                name,
                retention_duration,
            )
        seconds = influxdb_duration_seconds(retention_duration) if retention_duration else None
        return RetentionPolicy(retention_policy or DEFAULT_RP, seconds, retention_policy is None)

    def bucket_target(
        self, database: str, retention_policy: str | None, retention_duration: str | None
    ) -> RetentionPolicy:
        name = bucket_name(database, retention_policy)
        bucket = self.find_bucket(name)
        if bucket is None:
            if retention_policy is not None and retention_duration is None:
                raise InfluxError(
                    f'bucket "{name}" (database "{database}", retention policy '
                    f'"{retention_policy}") does not exist on {self.display_url}: create it, '
                    "or give retention_duration in the query file"
                )
            bucket = self._create_bucket(name, retention_duration)
        seconds = bucket_seconds(bucket)
        if (
            retention_duration is not None
            and influxdb_duration_seconds(retention_duration) != seconds
        ):
            log.warning(
                'bucket "%s" exists with another retention and is kept as it is '
                "(retention_duration %s only applies when creating it)",
                name,
                retention_duration,
            )
        self._ensure_dbrp(database, retention_policy, bucket.id)
        return RetentionPolicy(retention_policy or DEFAULT_RP, seconds, retention_policy is None)

    def find_bucket(self, name: str) -> Bucket | None:
        org_id = self._organization_id()
        found, _ = self._with_retries(
            lambda: self._client.buckets_api().find_buckets(name=name, org_id=org_id).buckets,
            f'looking up bucket "{name}"',
        )
        return next((bucket for bucket in found or [] if bucket.name == name), None)

    def _create_bucket(self, name: str, retention_duration: str | None) -> Bucket:
        seconds = influxdb_duration_seconds(retention_duration) if retention_duration else None
        rules = [BucketRetentionRules(type="expire", every_seconds=seconds)] if seconds else []
        org_id = self._organization_id()
        bucket, _ = self._with_retries(
            lambda: self._client.buckets_api().create_bucket(
                bucket_name=name, retention_rules=rules, org=org_id
            ),
            f'creating bucket "{name}"',
        )
        log.info('created bucket "%s" (retention %s)', name, retention_duration or "INF")
        return bucket

    def _ensure_dbrp(self, database: str, retention_policy: str | None, bucket_id: str) -> None:
        """Map `"db"."rp"` to the bucket for InfluxQL, unless a mapping for it exists."""
        rp = retention_policy or DEFAULT_RP
        org_id = self._organization_id()
        service = DBRPsService(self._client.api_client)
        mappings, _ = self._with_retries(
            lambda: service.get_dbr_ps(org_id=org_id, db=database).content or [],
            f'reading the DBRP mappings of "{database}"',
        )
        existing = next((m for m in mappings if m.retention_policy == rp), None)
        if existing is not None:
            if existing.bucket_id != bucket_id:
                log.warning(
                    'InfluxQL "%s"."%s" is mapped to another bucket (%s) and is kept as it is',
                    database,
                    rp,
                    existing.bucket_id,
                )
            return
        default = retention_policy is None and not any(m.default for m in mappings)
        mapping = DBRPCreate(
            org_id=org_id, bucket_id=bucket_id, database=database, retention_policy=rp,
            default=default,
        )  # fmt: skip
        self._with_retries(
            lambda: service.post_dbrp(mapping), f'creating the DBRP mapping "{database}"."{rp}"'
        )
        log.info('mapped InfluxQL "%s"."%s" to bucket %s', database, rp, bucket_id)

    def _organization_id(self) -> str:
        with self._org_lock:
            if self._org_id is None:
                self._org_id = self._find_organization_id()
            return self._org_id

    def _find_organization_id(self) -> str:
        if ORG_ID.fullmatch(self.org):
            return self.org
        orgs, _ = self._with_retries(
            lambda: self._client.organizations_api().find_organizations(org=self.org),
            f'INFLUX_ORG "{self.org}"',
        )
        if not orgs:
            raise ConfigError(
                f'INFLUX_ORG "{self.org}" is not an organization INFLUX_TOKEN can read '
                f"on {self.display_url}"
            )
        return orgs[0].id


def bucket_seconds(bucket: Bucket) -> int | None:
    """The bucket's retention in seconds; None for infinite (no rule, or everySeconds 0)."""
    seconds = [rule.every_seconds for rule in bucket.retention_rules or [] if rule.every_seconds]
    return min(seconds) if seconds else None
