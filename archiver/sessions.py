"""HTTP sessions as the archiver uses them: each talks to one server, and reads the
environment once.

requests reads the environment again on every request (`Session.merge_environment_settings`
walks every variable for HTTP(S)_PROXY and NO_PROXY, twice, and stats ~/.netrc): 0.3-0.4 ms
of CPU a request with 38 variables (a 100 KB POST to a local server: 0.88 → 0.50 ms; a
5,000-line /write to influxd, its gzip aside: 2.0 → 1.6 ms; 2026-11-29). Every session here
sends all its requests to the server of one URL, so what the environment says for that URL
holds for all of them, and is read when the session is made.
"""

from __future__ import annotations

import requests
from requests.utils import get_netrc_auth


def session_for(url: str, session: requests.Session | None = None) -> requests.Session:
    """`session` (a new one when None) for the server of `url`, with what requests would take
    from the environment on each request taken now, once: the proxy (HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY, NO_PROXY), the CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) and, when the
    session has no credentials of its own, ~/.netrc's for the host."""
    session = session if session is not None else requests.Session()
    if not session.trust_env:
        return session
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    session.cert = settings["cert"]
    if session.auth is None:
        session.auth = get_netrc_auth(url)
    session.trust_env = False
    return session
