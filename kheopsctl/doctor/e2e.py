"""Live: the gateway is ready through nginx, and a real token travels the whole path.

The end-to-end probe obtains a token from Keycloak by the client-credentials grant of the confidential client
``kheopsctl``, then calls ``GET /api/pacs/echo`` through nginx: the gateway validates the token (signature,
issuer, audience, expiry) and calls the PACS.
"""

from __future__ import annotations

import httpx

from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.keycloak import KeycloakProblem, discovery
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok

SERVICE_CLIENT = "kheopsctl"


@check("gateway.ready", "live", "the gateway answers /health/ready through nginx")
def gateway_ready(ctx: DoctorContext) -> Outcome:
    url = ctx.settings.root_url + "/health/ready"
    try:
        r = ctx.site_request("GET", url)
    except httpx.HTTPError as exc:
        return fail(f"nothing answers at {url}: {type(exc).__name__}: {exc}",
                    "check container.nginx; is ports.http published on this host?")
    body = _json(r)
    if r.status_code == 200:
        return ok(f"ready ({url})", response=body)
    if r.status_code in (502, 503, 504) and not body:
        return fail(f"nginx answers HTTP {r.status_code}: the gateway is down or unreachable",
                    "check container.gateway and its logs (`docker logs` of the gateway container)")
    return fail(f"the gateway is not ready (HTTP {r.status_code}): {body or r.text[:200]}",
                "its readiness names the failing dependency (database, Keycloak keys, PACS); see the checks above",
                response=body)


@check("e2e.probe", "live", "a client-credentials token is accepted by the gateway, which reaches the PACS")
def e2e_probe(ctx: DoctorContext) -> Outcome:
    try:
        token_endpoint = discovery(ctx)["token_endpoint"]
    except KeycloakProblem:
        return fail("no token can be obtained: Keycloak discovery fails (see keycloak.discovery)",
                    "fix keycloak.discovery first")
    secret = ctx.secret("kheops_client_kheopsctl_secret")
    try:
        r = ctx.site_request("POST", token_endpoint,
                             data={"grant_type": "client_credentials", "client_id": SERVICE_CLIENT,
                                   "client_secret": secret})
    except httpx.HTTPError as exc:
        return fail(f"token endpoint unreachable: {type(exc).__name__}: {exc}", "see keycloak.discovery")
    if r.status_code != 200:
        body = _json(r)
        err = body.get("error", "") if isinstance(body, dict) else ""
        if r.status_code >= 500:
            return fail(f"Keycloak failed while issuing a token (HTTP {r.status_code} {err})".rstrip(),
                        "read the keycloak container's logs (a database outage shows there; right after a "
                        "PostgreSQL restart the first requests may fail: run doctor again)")
        return fail(f"Keycloak refused the client-credentials grant of {SERVICE_CLIENT!r}: {err or r.status_code}",
                    f"the client secret must equal secrets/kheops_client_kheopsctl_secret; re-run "
                    f"`kheopsctl install --dir {ctx.layout.dir}` to restore the client")
    token = r.json()["access_token"]
    url = ctx.settings.root_url + "/api/pacs/echo"
    try:
        r = ctx.site_request("GET", url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return fail(f"{url} unreachable: {type(exc).__name__}: {exc}", "see gateway.ready")
    body = _json(r)
    details = {"status": r.status_code, "response": body}
    if r.status_code == 200:
        return ok("token from Keycloak accepted by the gateway; the gateway reached the PACS", **details)
    if r.status_code == 401:
        return fail(f"the gateway refused a fresh Keycloak token: {body.get('error') if isinstance(body, dict) else r.text[:120]}",
                    "issuer, audience or keys disagree between Keycloak and the gateway; see keycloak.issuer",
                    **details)
    if r.status_code in (502, 503, 504):
        return fail(f"the gateway accepted the token but the PACS did not answer (HTTP {r.status_code})",
                    "see pacs.qido and container.orthanc", **details)
    return fail(f"{url} answered HTTP {r.status_code}", "read the gateway's logs", **details)


def _json(r: httpx.Response):
    try:
        return r.json()
    except ValueError:
        return {}
