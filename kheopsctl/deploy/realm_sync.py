"""Reconcile the running realm with the rendered one through Keycloak's admin API (python-keycloak).

The ``kheops`` client scope is not part of the import file on purpose: a realm file that lists any client scope
replaces Keycloak's built-in ones (basic, profile, email, roles...), and tokens would lose ``sub``. Keycloak
ignores the unknown ``kheops`` reference on import; this reconcile creates the scope (realms/kheops-client-scope.json)
and assigns it right after the first start.

Keycloak's ``--import-realm`` only creates a realm that does not exist yet; an existing realm keeps its old
clients whatever the file says. After each bring-up we therefore compare the managed parts (realm policies,
the ``kheops`` client scope, both clients, their mappers and default scopes, the kheopsctl client secret)
and change only what differs. Users and sessions are never touched.
"""

from __future__ import annotations

import json
import time

from kheopsctl.config import Settings
from kheopsctl.errors import KheopsError
from kheopsctl.resources import realms_dir
from kheopsctl.site import SiteLayout, labels
from kheopsctl.site.docker import project_containers
from kheopsctl.site.installed import local_address, url_host
from kheopsctl.site.secrets import read_secret

REALM_KEYS = ("sslRequired", "registrationAllowed", "resetPasswordAllowed", "bruteForceProtected",
              "failureFactor", "waitIncrementSeconds", "maxFailureWaitSeconds", "accessTokenLifespan",
              "ssoSessionIdleTimeout", "ssoSessionMaxLifespan", "revokeRefreshToken", "editUsernameAllowed")
CLIENT_KEYS = ("enabled", "publicClient", "standardFlowEnabled", "implicitFlowEnabled",
               "directAccessGrantsEnabled", "serviceAccountsEnabled", "rootUrl", "baseUrl", "redirectUris",
               "webOrigins", "clientAuthenticatorType")


def keycloak_admin_url(settings: Settings, client=None) -> str:
    """Where kheopsctl (on the host) reaches Keycloak: its published port, or the container on the edge network."""
    if not settings.secured:
        return f"http://{url_host(local_address(settings))}:{settings.ports.keycloak}"
    if client is None:
        raise KheopsError("Keycloak is not published in secured mode and no Docker client was given")
    for c in project_containers(client, settings.project):
        if c.labels.get(labels.SERVICE) == "keycloak":
            networks = c.attrs["NetworkSettings"]["Networks"]
            # the edge network: the internal one is cut off from the host on purpose
            for name in sorted(networks, key=lambda n: not n.endswith("_edge")):
                if networks[name].get("IPAddress"):
                    return f"http://{networks[name]['IPAddress']}:8080"
    raise KheopsError("cannot find the keycloak container's address", hint="run kheopsctl status")


def admin(settings: Settings, layout: SiteLayout, client=None, attempts: int = 20):
    from keycloak import KeycloakAdmin
    from keycloak.exceptions import KeycloakError

    url = keycloak_admin_url(settings, client)
    password = read_secret(layout, "keycloak_admin_password")
    last: Exception | None = None
    for _ in range(attempts):  # healthy can precede the admin API by a moment
        try:
            kc = KeycloakAdmin(server_url=url + "/", username=settings.keycloak.admin_user, password=password,
                               realm_name=settings.keycloak.realm, user_realm_name="master", timeout=20)
            kc.connection.get_token()  # log in now, so a wrong password is reported here
            return kc
        except KeycloakError as exc:
            if getattr(exc, "response_code", None) == 401:
                raise KheopsError("Keycloak rejected the admin password in secrets/keycloak_admin_password",
                                  hint="the password was changed in Keycloak; put the current one in that file") from None
            last = exc
        except Exception as exc:  # connection refused while starting
            last = exc
        time.sleep(1)
    raise KheopsError(f"cannot log in to Keycloak's admin API at {url}: {last}", hint="see kheopsctl logs keycloak")


def desired_realm(settings: Settings, layout: SiteLayout) -> dict:
    rep = json.loads(layout.realm.read_text())
    secret = read_secret(layout, "kheops_client_kheopsctl_secret")
    for c in rep["clients"]:
        if c.get("secret") == "${KHEOPS_CLIENT_KHEOPSCTL_SECRET}":
            c["secret"] = secret
    # the web client's secret is not in the import file (Keycloak makes up one there): it is set from the file
    web_secret = layout.secret("kheops_client_web_secret")
    for c in rep["clients"]:
        if c["clientId"] == "kheops-web" and web_secret.exists():
            c["secret"] = read_secret(layout, "kheops_client_web_secret")
    return rep


def reconcile(settings: Settings, layout: SiteLayout, client=None) -> list[str]:
    """Make the live realm match the rendered one; returns a description of each change made."""
    kc = admin(settings, layout, client)
    want = desired_realm(settings, layout)
    realm = settings.keycloak.realm
    changes: list[str] = []
    from keycloak.exceptions import KeycloakGetError

    try:
        current = kc.get_realm(realm)
    except KeycloakGetError as exc:
        if getattr(exc, "response_code", None) != 404:
            raise
        kc.create_realm(want, skip_exists=True)  # the import did not happen (e.g. the file was added later)
        changes.append(f"created realm {realm}")
        current = kc.get_realm(realm)
    from kheopsctl.ops import smtp  # [smtp] -> smtpServer; also decides want's resetPasswordAllowed

    changes += smtp.reconcile_realm(kc, realm, want, current, settings, layout)
    diff = {k: want[k] for k in REALM_KEYS if k in want and current.get(k) != want[k]}
    if diff:
        kc.update_realm(realm, diff)
        changes.append(f"realm settings: {', '.join(sorted(diff))}")

    scope_ids = _ensure_scopes(kc, want, changes)
    live = {c["clientId"]: c for c in kc.get_clients()}
    for wanted in want["clients"]:
        _reconcile_client(kc, wanted, live.get(wanted["clientId"]), scope_ids, changes)
    return changes


def _ensure_scopes(kc, want: dict, changes: list[str]) -> dict[str, str]:
    existing = {s["name"]: s for s in kc.get_client_scopes()}
    for scope in [*want.get("clientScopes", []), kheops_scope()]:
        if scope["name"] not in existing:
            kc.create_client_scope(scope, skip_exists=True)
            changes.append(f"created client scope {scope['name']}")
    return {s["name"]: s["id"] for s in kc.get_client_scopes()}


def kheops_scope() -> dict:
    return json.loads((realms_dir() / "kheops-client-scope.json").read_text())


def _reconcile_client(kc, wanted: dict, current: dict | None, scope_ids: dict[str, str], changes: list[str]) -> None:
    client_id = wanted["clientId"]
    if current is None:
        kc.create_client(wanted, skip_exists=True)
        changes.append(f"created client {client_id}")
        current = kc.get_client(kc.get_client_id(client_id))
    uuid = current["id"]
    diff = {k: wanted[k] for k in CLIENT_KEYS if k in wanted and _norm(current.get(k)) != _norm(wanted[k])}
    for key, value in wanted.get("attributes", {}).items():
        if current.get("attributes", {}).get(key) != value:
            diff.setdefault("attributes", dict(current.get("attributes", {})))[key] = value
    if "secret" in wanted and not wanted.get("publicClient"):
        live = kc.get_client_secrets(uuid).get("value")
        if live != wanted["secret"]:
            diff["secret"] = wanted["secret"]
    if diff:
        kc.update_client(uuid, {**current, **diff})
        changes.append(f"client {client_id}: {', '.join(sorted(diff))}")

    have = {m["name"] for m in kc.get_mappers_from_client(uuid)}
    for mapper in wanted.get("protocolMappers", []):
        if mapper["name"] not in have:
            kc.add_mapper_to_client(uuid, mapper)
            changes.append(f"client {client_id}: added mapper {mapper['name']}")

    assigned = {s["name"] for s in kc.get_client_default_client_scopes(uuid)}
    for name in wanted.get("defaultClientScopes", []):
        if name not in assigned and name in scope_ids:
            kc.add_client_default_client_scope(uuid, scope_ids[name], {})
            changes.append(f"client {client_id}: default scope {name}")


def _norm(value):
    return sorted(value) if isinstance(value, list) else value
