"""Dashboards the fake NerdGraph server answers `actor { entity(guid:) }` with.

Shaped like New Relic's answers (see tests/dashboards/golden/ for real ones): pages of widgets,
each with `title`, `visualization { id }` and a free-form `rawConfiguration` holding
`nrqlQueries` (with `accountIds`, or the older `accountId`) or, for markdown, `text`. The NRQL
is what the fake can answer once the importer has removed the chart's time clauses.
"""

from __future__ import annotations

from typing import Any

CHECKOUT_GUID = "MTIzNDU2N3xWSVp8REFTSEJPQVJEfDQyNDI0Mg"  # base64 "1234567|VIZ|DASHBOARD|424242"
OTHER_ACCOUNT = 7654321


def _widget(title: str, visualization: str, **raw: Any) -> dict[str, Any]:
    return {
        "title": title,
        "visualization": {"id": visualization},
        "layout": {"column": 1, "row": 1, "width": 4, "height": 3},
        "linkedEntityGuids": None,
        "rawConfiguration": raw,
    }


def _queries(*queries: tuple[Any, str]) -> list[dict[str, Any]]:
    """(accounts, nrql): a list gives `accountIds`, an int the older `accountId`."""
    return [
        {"accountIds": accounts, "query": nrql}
        if isinstance(accounts, list)
        else {"accountId": accounts, "query": nrql}
        for accounts, nrql in queries
    ]


def checkout_dashboard(account: int = 1234567) -> dict[str, Any]:
    return {
        "guid": CHECKOUT_GUID,
        "name": "Checkout service",
        "entityType": "DASHBOARD_ENTITY",
        "pages": [
            {
                "name": "Overview",
                "widgets": [
                    _widget("", "viz.markdown", text="# Checkout\nThroughput and errors."),
                    _widget(
                        "Throughput",
                        "viz.line",
                        facet={"showOtherSeries": False},
                        legend={"enabled": True},
                        nrqlQueries=_queries(
                            (
                                [account],
                                "SELECT count(*) FROM Transaction FACET appName "
                                "SINCE 3 hours ago TIMESERIES 5 minutes",
                            )
                        ),
                    ),
                    _widget(
                        "Duration (s)",
                        "viz.area",
                        nrqlQueries=_queries(
                            (
                                account,
                                "SELECT average(duration), percentile(duration, 95, 99) "
                                "FROM Transaction FACET appName, host SINCE 1 day ago TIMESERIES",
                            )
                        ),
                    ),
                    _widget(
                        "Errors vs yesterday",
                        "viz.billboard",
                        dataFormatters=[],
                        thresholds=[],
                        nrqlQueries=_queries(
                            (
                                [account],
                                "SELECT count(*) FROM TransactionError "
                                "SINCE 1 hour ago COMPARE WITH 1 day ago",
                            )
                        ),
                    ),
                    _widget(
                        "Logins",
                        "viz.billboard",
                        nrqlQueries=_queries(
                            (
                                [account],
                                "SELECT count(*) FROM Login FACET provider, success "
                                "SINCE 1 day ago",
                            )
                        ),
                    ),
                ],
            },
            {
                "name": "Database & pages",
                "widgets": [
                    _widget(
                        "Replication lag",
                        "viz.line",
                        nrqlQueries=_queries(
                            (
                                [account],
                                "SELECT max(lag) FROM ReplicationLag FACET cluster "
                                "SINCE 2 hours ago TIMESERIES 1 minute",
                            ),
                            (
                                [account],
                                "SELECT average(lag) FROM ReplicationLag FACET cluster "
                                "SINCE 2 hours ago TIMESERIES 1 minute",
                            ),
                        ),
                    ),
                    _widget(
                        "Slowest transactions",
                        "viz.table",
                        nrqlQueries=_queries(
                            (
                                [account],
                                "SELECT max(duration) FROM Transaction FACET name LIMIT 5 "
                                "SINCE 1 day ago EXTRAPOLATE",
                            )
                        ),
                    ),
                    _widget(
                        "Page views, both accounts",
                        "viz.line",
                        nrqlQueries=_queries(
                            (
                                [account, OTHER_ACCOUNT],
                                "SELECT count(*) FROM PageView SINCE 6 hours ago "
                                "TIMESERIES 15 minutes WITH TIMEZONE 'Europe/Paris'",
                            )
                        ),
                    ),
                    _widget(
                        "Recent page views",
                        "viz.table",
                        nrqlQueries=_queries(
                            ([account], "SELECT * FROM PageView SINCE 1 hour ago")
                        ),
                    ),
                    _widget(
                        "Everything by everything",
                        "viz.line",
                        nrqlQueries=_queries(
                            (
                                [account],
                                "SELECT count(*) FROM Transaction FACET appName, host, name, "
                                "transactionType, request.method, httpResponseCode TIMESERIES",
                            )
                        ),
                    ),
                ],
            },
        ],
    }


def default_dashboards(account: int = 1234567) -> dict[str, dict[str, Any]]:
    return {CHECKOUT_GUID: checkout_dashboard(account)}
