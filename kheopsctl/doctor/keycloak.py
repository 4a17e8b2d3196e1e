"""Live: Keycloak's OIDC discovery, the realm and its clients, and the issuer the gateway expects.

The admin API is read with the admin password secret. On an insecure site Keycloak's port is published on
this host and is called directly; on a secured site it is internal only, so the same request runs inside the
gateway container against http://keycloak:8080.
"""

from __future__ import annotations

import inspect
from urllib.parse import urlsplit

from kheopsctl.doctor import kcprobe
from kheopsctl.doctor.context import DockerError, DoctorContext
from kheopsctl.doctor.inside import ProbeUnavailable, exec_json
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, skip, warn

PUBLIC_CLIENT = "loginConnect"
SERVICE_CLIENT = "kheopsctl"


class KeycloakProblem(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


def discovery(ctx: DoctorContext) -> dict:
    def fetch() -> dict:
        url = f"{ctx.settings.issuer}/.well-known/openid-configuration"
        import httpx

        try:
            r = ctx.site_request("GET", url)
        except httpx.HTTPError as exc:
            raise KeycloakProblem(f"Keycloak does not answer at {url}: {type(exc).__name__}: {exc}"
                                  + _keycloak_state(ctx),
                                  "check container.keycloak; Keycloak can take a few minutes to start") from None
        if r.status_code == 404:
            raise KeycloakProblem(f"realm {ctx.settings.keycloak.realm!r} not found at {url}",
                                  f"re-run `kheopsctl install --dir {ctx.layout.dir}` to import the realm")
        if r.status_code != 200:
            raise KeycloakProblem(f"OIDC discovery answered HTTP {r.status_code} at {url}",
                                  "read the keycloak container's logs")
        return r.json()

    return ctx.memo("kc.discovery", fetch)


@check("keycloak.discovery", "live", "Keycloak's OIDC discovery and signing keys answer at the public URL")
def keycloak_discovery(ctx: DoctorContext) -> Outcome:
    try:
        doc = discovery(ctx)
    except KeycloakProblem as exc:
        return fail(exc.message, exc.hint)
    missing = [k for k in ("issuer", "token_endpoint", "jwks_uri", "authorization_endpoint") if not doc.get(k)]
    if missing:
        return fail(f"discovery document lacks {', '.join(missing)}", "read the keycloak container's logs")
    r = ctx.site_request("GET", doc["jwks_uri"])
    keys = [k for k in (r.json().get("keys", []) if r.status_code == 200 else []) if k.get("use", "sig") == "sig"]
    if not any(k.get("alg") == "RS256" for k in keys):
        return fail(f"no RS256 signing key at {doc['jwks_uri']} (HTTP {r.status_code})",
                    "the realm must have an active RSA key; check Realm settings > Keys in Keycloak")
    return ok(f"discovery and {len(keys)} signing key(s) at {ctx.settings.keycloak_public_url}",
              issuer=doc["issuer"], jwks_uri=doc["jwks_uri"])


@check("keycloak.issuer", "live", "the issuer Keycloak announces is the one the gateway expects")
def keycloak_issuer(ctx: DoctorContext) -> Outcome:
    try:
        announced = discovery(ctx)["issuer"]
    except KeycloakProblem:
        return skip("Keycloak discovery unavailable (see keycloak.discovery)")
    expected = ctx.settings.issuer
    try:
        gateway = _gateway_env(ctx).get("KHEOPS_GW_OIDC_ISSUER")
    except DockerError:
        gateway = ""  # cannot read the container's environment; the announced issuer is still compared
    details = {"announced": announced, "settings": expected, "gateway": gateway}
    hint = (f"re-run `kheopsctl install --dir {ctx.layout.dir}` so Keycloak (KC_HOSTNAME) and the gateway "
            "(KHEOPS_GW_OIDC_ISSUER) are rendered from the same root URL")
    if announced != expected:
        return fail(f"Keycloak announces issuer {announced}, the site expects {expected}: every token is refused",
                    hint, **details)
    if gateway is None:
        return skip("the gateway container does not exist (see container.gateway)", **details)
    if gateway == "":
        return ok(f"issuer {expected} (the gateway's expectation not read: Docker not reachable)", **details)
    if gateway != expected:
        return fail(f"the gateway expects issuer {gateway}, Keycloak announces {expected}", hint, **details)
    return ok(f"issuer {expected}", **details)


def _keycloak_state(ctx: DoctorContext) -> str:
    """A note on the container's state, which usually explains why Keycloak does not answer."""
    try:
        found = ctx.project_containers().get("keycloak", [])
    except Exception:
        return ""
    if not found:
        return " (no keycloak container)"
    c = found[0]
    health = ((c.attrs.get("State") or {}).get("Health") or {}).get("Status")
    if c.status != "running":
        return f" (container {c.name} is {c.status})"
    if health == "starting":
        return f" (container {c.name} is still starting)"
    return ""


def _gateway_env(ctx: DoctorContext) -> dict[str, str]:
    for c in ctx.project_containers().get("gateway", []):
        return dict(i.split("=", 1) for i in (c.attrs.get("Config") or {}).get("Env") or [] if "=" in i)
    return {}


def realm_data(ctx: DoctorContext) -> dict:
    """The realm and its clients from the admin API (memoised: several checks read them)."""

    def fetch() -> dict:
        s = ctx.settings
        password = ctx.secret("keycloak_admin_password")
        published = _published_keycloak(ctx)
        if published:
            base = f"http://{published}"
            data = kcprobe.fetch_realm(base, s.keycloak.admin_user, password, s.keycloak.realm)
            data["via"] = base
        else:
            try:
                data = exec_json(
                    ctx, "gateway", ["python", "-c", inspect.getsource(kcprobe)],
                    environment={"KC_BASE": "http://keycloak:8080", "KC_USER": s.keycloak.admin_user,
                                 "KC_PASSWORD": password, "KC_REALM": s.keycloak.realm},
                )
            except ProbeUnavailable:
                raise KeycloakProblem("Keycloak's admin API is internal and the gateway container is not running",
                                      "start the gateway container (see container.gateway)") from None
            data["via"] = "gateway container"
        if "error" in data:
            stage = data.get("stage")
            if stage == "login" and data.get("status") in (400, 401):
                hint = ("the admin password differs from secrets/keycloak_admin_password (changed in Keycloak?); "
                        "put the current one in that file")
            elif stage == "realm" and data.get("status") == 404:
                hint = f"re-run `kheopsctl install --dir {ctx.layout.dir}` to import the realm"
            else:
                hint = "check container.keycloak and the keycloak container's logs"
            state = _keycloak_state(ctx) if stage == "connect" else ""
            raise KeycloakProblem(f"Keycloak admin API ({data['via']}): {data['error']}{state}", hint)
        return data

    return ctx.memo("kc.realm", fetch)


def _published_keycloak(ctx: DoctorContext) -> str | None:
    """host:port where this site's Keycloak port 8080 is published, if it is."""
    # without the engine nothing says that what answers on ports.keycloak is this site's Keycloak: a refused
    # login there must not be read as a wrong stored password, so DockerError propagates
    for c in ctx.project_containers().get("keycloak", []):
        for b in ((c.attrs.get("NetworkSettings") or {}).get("Ports") or {}).get("8080/tcp") or []:
            ip = b.get("HostIp") or "127.0.0.1"
            ip = ctx.local_address if ip in ("0.0.0.0", "::", "") else ip
            return f"[{ip}]:{b['HostPort']}" if ":" in ip else f"{ip}:{b['HostPort']}"
    return None


def clients_by_id(data: dict) -> dict[str, dict]:
    return {c.get("clientId"): c for c in data["clients"]}


@check("keycloak.realm", "live", "the realm exists and holds the loginConnect and kheopsctl clients")
def keycloak_realm(ctx: DoctorContext) -> Outcome:
    try:
        data = realm_data(ctx)
    except KeycloakProblem as exc:
        return fail(exc.message, exc.hint)
    realm = data["realm"]
    clients = clients_by_id(data)
    hint = f"re-run `kheopsctl install --dir {ctx.layout.dir}` to restore the realm's clients"
    if not realm.get("enabled", True):
        return fail(f"realm {realm.get('realm')!r} is disabled", "enable it in the Keycloak admin console")
    missing = [c for c in (PUBLIC_CLIENT, SERVICE_CLIENT) if c not in clients]
    if missing:
        return fail(f"client(s) {', '.join(missing)} missing from realm {realm.get('realm')!r}", hint)
    login, svc = clients[PUBLIC_CLIENT], clients[SERVICE_CLIENT]
    if not login.get("publicClient") or not login.get("standardFlowEnabled", True):
        return fail(f"{PUBLIC_CLIENT} must be a public client with the authorization-code flow", hint)
    if not svc.get("serviceAccountsEnabled") or svc.get("publicClient"):
        return fail(f"{SERVICE_CLIENT} must be a confidential client with a service account", hint)
    return ok(f"realm {realm.get('realm')!r} with {len(clients)} clients (admin API via {data['via']})",
              clients=sorted(c for c in clients if c))


def redirect_problems(uri: str, root: str) -> str | None:
    """Why a redirect URI is not bound to the site root (None when it is).

    Allowed: the root itself, or a path under it, optionally ending in Keycloak's path wildcard ``/*``.
    """
    if is_wildcard(uri):
        return "contains a wildcard"
    base = uri[:-1] if uri.endswith("/*") else uri
    if base.rstrip("/") == root or base.startswith(root + "/"):
        return None
    parts = urlsplit(base)
    if not parts.scheme:
        return "is relative (resolved against the client's root URL)"
    return f"points outside the site ({parts.scheme}://{parts.netloc})"


def is_wildcard(uri: str) -> bool:
    """True unless the URI has no ``*`` or only Keycloak's trailing path wildcard after a concrete location
    (``https://host/*``, ``/realms/x/account/*``); ``*``, ``/*``, ``http://*`` and ``https://*.org/*`` are."""
    if "*" not in uri:
        return False
    if not uri.endswith("/*"):
        return True
    base = uri[:-2]
    if "*" in base or base in ("", "+"):
        return True
    parts = urlsplit(base)
    return bool(parts.scheme) and not parts.hostname


def bad_redirects(client: dict, root: str) -> list[str]:
    out = []
    for uri in client.get("redirectUris") or []:
        why = redirect_problems(uri, root)
        if why:
            out.append(f"redirect URI {uri!r} {why}")
    for origin in client.get("webOrigins") or []:
        if origin not in ("+", root):
            out.append(f"web origin {origin!r} is not the site ({root})")
    return out


@check("keycloak.redirects", "live", "loginConnect's redirect URIs and web origins are bound to the root URL")
def keycloak_redirects(ctx: DoctorContext) -> Outcome:
    try:
        data = realm_data(ctx)
    except (KeycloakProblem, DockerError):
        return skip("Keycloak admin API unavailable (see keycloak.realm)")
    client = clients_by_id(data).get(PUBLIC_CLIENT)
    if client is None:
        return skip(f"no {PUBLIC_CLIENT} client (see keycloak.realm)")
    root = ctx.settings.root_url
    problems = bad_redirects(client, root)
    details = {"redirect_uris": client.get("redirectUris"), "web_origins": client.get("webOrigins"),
               "root_url": root}
    if problems:
        return fail(
            f"{PUBLIC_CLIENT}: " + "; ".join(problems),
            f"logins fail or can be redirected elsewhere: re-run `kheopsctl install --dir {ctx.layout.dir}` to "
            f"set them to {root}/* again, or fix them in the admin console (Clients > {PUBLIC_CLIENT})",
            **details,
        )
    if not client.get("redirectUris"):
        return warn(f"{PUBLIC_CLIENT} has no redirect URI: nobody can log in",
                    f"re-run `kheopsctl install --dir {ctx.layout.dir}`", **details)
    return ok(f"{PUBLIC_CLIENT} redirects bound to {root}", **details)
