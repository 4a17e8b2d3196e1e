"""Live: security posture. Secret file modes, exposure of an insecure site or of Keycloak's admin console,
weak admin password, wildcard redirect URIs anywhere in the realm."""

from __future__ import annotations

import ipaddress
import os
import stat

import httpx

from kheopsctl.doctor.context import DockerError, DoctorContext
from kheopsctl.doctor.keycloak import KeycloakProblem, is_wildcard, realm_data
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, skip, warn
from kheopsctl.site.fsutil import is_stray_temp

# passwords people type when asked quickly; the Keycloak / KHEOPS / Docker-tutorial defaults
DEFAULT_PASSWORDS = {
    "admin", "password", "keycloak", "kheops", "changeme", "change_me", "secret", "123456", "12345678",
    "root", "test", "letmein", "passw0rd", "admin123", "administrator", "qwerty", "kheopsadmin", "pass",
}
MIN_PASSWORD_LENGTH = 12


@check("security.secret-modes", "live", "DIR/secrets is 0700 and every secret file 0600, owned by this user")
def secret_modes(ctx: DoctorContext) -> Outcome:
    sdir = ctx.layout.secrets_dir
    if not sdir.is_dir():
        return fail(f"{sdir} does not exist", f"run `kheopsctl install --dir {ctx.layout.dir}` to create the secrets")
    problems, loose = [], []
    dmode = stat.S_IMODE(sdir.stat().st_mode)
    if dmode & 0o077:
        problems.append(f"{sdir} is {dmode:04o} (want 0700)")
        loose.append(f"chmod 700 {sdir}")
    # a ".NAME.*.tmp" is an atomic write that was interrupted (kheopsctl cleans them up), not a secret
    files = sorted(p for p in sdir.iterdir() if p.is_file() and not is_stray_temp(p))
    me = os.getuid() if hasattr(os, "getuid") else None
    others = []
    for path in files:
        st = path.stat()
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            problems.append(f"{path.name} is {mode:04o} (want 0600)")
            loose.append(f"chmod 600 {path}")
        if me is not None and st.st_uid not in (me, 0):
            others.append(path.name)
    details = {"files": [p.name for p in files], "problems": problems}
    if problems:
        return fail("secrets readable by others: " + "; ".join(problems), " && ".join(loose), **details)
    if others:
        return warn(f"secret(s) owned by another user: {', '.join(others)}",
                    "chown them to the user running kheopsctl", **details)
    return ok(f"{len(files)} secret files 0600 in a 0700 directory", **details)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _published(ctx: DoctorContext) -> list[tuple[str, str, str]]:
    """(service, host ip, host port) of every port this site publishes."""
    out = []
    for service, containers in ctx.project_containers().items():
        for c in containers:
            for bindings in ((c.attrs.get("NetworkSettings") or {}).get("Ports") or {}).values():
                for b in bindings or []:
                    out.append((service, b.get("HostIp") or "0.0.0.0", b.get("HostPort")))
    return out


@check("security.exposure", "live", "an insecure (plain HTTP) site is reachable from this host only")
def exposure(ctx: DoctorContext) -> Outcome:
    s = ctx.settings
    try:
        published = _published(ctx)
    except DockerError:
        published = []
    beyond = sorted({f"{svc} on {ip}:{port}" for svc, ip, port in published if not _is_loopback(ip)})
    details = {"bind_address": s.site.bind_address, "mode": s.site.mode, "published_beyond_loopback": beyond}
    if not s.secured and (not _is_loopback(s.site.bind_address) or beyond):
        where = ", ".join(beyond) or f"bind address {s.site.bind_address}"
        return fail(
            f"plain-HTTP site reachable beyond this host ({where}): passwords and tokens travel in clear",
            "secure it with `kheopsctl secure`, or set site.bind_address = \"127.0.0.1\" and re-run install",
            **details,
        )
    metrics = [b for b in beyond if b.startswith("gateway ")]
    if metrics:
        return warn(f"gateway metrics published beyond loopback ({', '.join(metrics)})",
                    "set ports.metrics = 0, or bind_address to loopback; metrics stay behind their bearer token",
                    **details)
    if s.secured:
        return ok(f"TLS site on {s.site.bind_address} ({s.site.mode})", **details)
    return ok(f"insecure site bound to loopback ({s.site.bind_address}) only", **details)


@check("security.admin-console", "live", "Keycloak's admin console is not reachable publicly")
def admin_console(ctx: DoctorContext) -> Outcome:
    s = ctx.settings
    if not s.secured:
        try:
            published = [(ip, port) for svc, ip, port in _published(ctx) if svc == "keycloak"]
        except DockerError:  # judge from the settings the site was rendered from
            published = [(s.site.bind_address, str(s.ports.keycloak))]
        public = [f"{ip}:{port}" for ip, port in published if not _is_loopback(ip)]
        if public:
            return fail(f"Keycloak (admin console included) is published on {', '.join(public)} over plain HTTP",
                        "set site.bind_address = \"127.0.0.1\" and re-run install, or secure the site",
                        published=public)
        return ok("Keycloak is published on loopback only" if published else "Keycloak is not published")
    url = s.root_url + "/admin/master/console/"
    try:
        r = ctx.site_request("GET", url)
    except httpx.HTTPError as exc:
        return skip(f"the site does not answer on HTTPS ({type(exc).__name__}); see tls.certificate")
    reachable = r.status_code == 200 or (r.status_code in (302, 303) and "/realms/master/" in
                                         r.headers.get("location", ""))
    details = {"url": url, "status": r.status_code, "expose_admin_console": s.keycloak.expose_admin_console}
    if not reachable:
        return ok(f"{url} is not served (HTTP {r.status_code})", **details)
    if s.keycloak.expose_admin_console:
        return warn(f"the admin console is public at {url} (keycloak.expose_admin_console = true)",
                    "set keycloak.expose_admin_console = false and re-run `kheopsctl secure` unless you need it",
                    **details)
    return fail(f"the admin console is public at {url} although keycloak.expose_admin_console is false",
                "re-run `kheopsctl secure` to render nginx again; it must block /admin/", **details)


def password_weakness(password: str, username: str = "admin") -> tuple[str, str] | None:
    """(status, why) when the password is default or weak, else None."""
    low = password.lower()
    if low in DEFAULT_PASSWORDS or low == username.lower():
        return "fail", "is a well-known default"
    if len(password) < MIN_PASSWORD_LENGTH:
        return "fail", f"has only {len(password)} characters (at least {MIN_PASSWORD_LENGTH})"
    classes = sum(any(f(ch) for ch in password) for f in (str.islower, str.isupper, str.isdigit,
                                                           lambda ch: not ch.isalnum()))
    if len(set(password)) < 6 or (classes < 2 and len(password) < 20):
        return "warn", "is easy to guess (few distinct characters)"
    return None


@check("security.admin-password", "live", "the Keycloak admin password is not a default or a weak one")
def admin_password(ctx: DoctorContext) -> Outcome:
    user = ctx.settings.keycloak.admin_user
    password = ctx.secret("keycloak_admin_password")
    weak = password_weakness(password, user)
    hint = ("change it in the Keycloak admin console (master realm > Users > admin > Credentials), then write the "
            "new one to secrets/keycloak_admin_password")
    if weak is None:
        return ok(f"the admin password of {user!r} has {len(password)} characters and is not a known default")
    status, why = weak
    return (fail if status == "fail" else warn)(f"the admin password of {user!r} {why}", hint)


def wildcard_uris(client: dict) -> list[str]:
    out = []
    for uri in client.get("redirectUris") or []:
        if is_wildcard(uri):
            out.append(f"redirect URI {uri!r}")
    for origin in client.get("webOrigins") or []:
        if "*" in origin:
            out.append(f"web origin {origin!r}")
    return out


@check("security.wildcard-redirects", "live", "no client of the realm accepts wildcard redirect URIs or origins")
def wildcard_redirects(ctx: DoctorContext) -> Outcome:
    try:
        data = realm_data(ctx)
    except (KeycloakProblem, DockerError):
        return skip("Keycloak admin API unavailable (see keycloak.realm)")
    found = {c.get("clientId"): wildcard_uris(c) for c in data["clients"]}
    found = {k: v for k, v in found.items() if v}
    if found:
        text = "; ".join(f"{cid}: {', '.join(v)}" for cid, v in found.items())
        return fail(f"wildcards let tokens be sent to any site: {text}",
                    "replace them with the site's URLs (Clients > … > Valid redirect URIs / Web origins); "
                    f"for loginConnect re-run `kheopsctl install --dir {ctx.layout.dir}`", clients=found)
    return ok(f"no wildcard in {len(data['clients'])} clients", clients_checked=len(data["clients"]))
