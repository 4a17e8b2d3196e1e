"""The switch to a secured mode, as one transaction: pre-flight, backup, switch, verify, or roll back.

Order matters:
1. pre-flight (nothing changed yet): URL, email, DNS, ports, certificate checks, port-80 self-check when our
   nginx already serves the ACME webroot;
2. backup of kheops.toml and every rendered file, and of where kheops/current pointed;
3. new kheops.toml + rendered files, TLS material in the `certs` volume (bootstrap or own certificate),
   `docker compose up` (nginx with 80+443, Keycloak's public hostname, the gateway's issuer, certbot);
4. Let's Encrypt: port-80 self-check (if not done in 1), issuance, kheops/current -> live/HOST, nginx reload;
5. the realm's clients pointed at the new root URL and read back; sslRequired=external;
6. post-switch health check over HTTPS.
Any failure in 3-6 restores the backup, brings the previous site back up and exits non-zero with the reason.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from kheopsctl.config import Settings, settings_from_dict
from kheopsctl.deploy.converge import converge
from kheopsctl.deploy.render import RenderedSite, render_site
from kheopsctl.deploy.sitefile import write_sitefile
from kheopsctl.deploy.tls_material import OWN_CERT_SECRET, OWN_KEY_SECRET, store_own_certificate
from kheopsctl.errors import KheopsError, UsageError
from kheopsctl.secure import acme, certs, dns, health, preflight
from kheopsctl.secure.certs import OwnCertificate
from kheopsctl.secure.keycloak import point_realm
from kheopsctl.site import Site, SiteLayout
from kheopsctl.site import certs_volume as volumes
from kheopsctl.site.docker import compose_command
from kheopsctl.site.fsutil import write_atomic


@dataclass
class SecureRequest:
    mode: str  # letsencrypt | custom
    root_url: str | None = None
    email: str | None = None
    acme_server: str | None = None
    acme_ca_bundle: Path | None = None
    staging: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    dns_server: str | None = None


@dataclass
class SecureResult:
    settings: Settings
    previous_mode: str
    certificate: certs.CertSummary | None = None
    clients: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"mode": self.settings.site.mode, "previous_mode": self.previous_mode,
                "root_url": self.settings.root_url, "issuer": self.settings.issuer,
                "certificate": self.certificate.to_dict() if self.certificate else None,
                "keycloak_clients": [c.to_dict() for c in self.clients],
                "warnings": self.warnings, "notes": self.notes, "seconds": round(self.seconds, 2)}


# ---------------------------------------------------------------------------------------------------------
# planning: the new settings, validated like any other settings


def current_settings(layout: SiteLayout) -> Settings:
    return Site.open(layout.dir).settings


PINNING_ENV = ("KHEOPS_ROOT_URL", "KHEOPS_SITE__ROOT_URL", "KHEOPS_SITE__MODE")


def check_environment(environ: dict[str, str]) -> None:
    """secure writes site.root_url and site.mode to kheops.toml; an environment override would win over it."""
    pinned = [name for name in PINNING_ENV if name in environ]
    if pinned:
        raise UsageError(f"{pinned[0]} is set in the environment and would override what secure writes to kheops.toml",
                         hint=f"unset {' '.join(pinned)} (kheops.toml keeps the site's root URL and mode)")


def plan(old: Settings, req: SecureRequest) -> Settings:
    data = old.to_dict()
    root_url = req.root_url or _https_of(old.root_url)
    preflight.check_https_root_url(root_url)
    data["site"]["root_url"] = root_url.rstrip("/")
    data["site"]["mode"] = req.mode
    tls = data["tls"]
    if req.mode == "letsencrypt":
        tls["email"] = req.email or tls["email"]
        if req.acme_server:
            tls["acme_server"] = req.acme_server
        elif req.staging:
            tls["acme_server"] = preflight.LETSENCRYPT_STAGING
        tls["staging"] = req.staging
        if req.acme_ca_bundle:
            tls["acme_ca_bundle"] = str(req.acme_ca_bundle.expanduser().absolute())
        tls["cert_file"] = tls["key_file"] = ""
    else:
        tls["cert_file"] = str(req.cert_file.expanduser().absolute())
        tls["key_file"] = str(req.key_file.expanduser().absolute())
    return settings_from_dict(data)


def _https_of(url: str) -> str:
    """Own-certificate mode without --root-url: the same host, now over https."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return f"https://[{host}]" if ":" in host else f"https://{host}"


# ---------------------------------------------------------------------------------------------------------
# pre-flight


def our_published_ports(site: Site) -> set[int]:
    ports: set[int] = set()
    for container in site.containers():
        if not site.owns(container.labels):
            continue  # the same project name in another directory is not this site
        for bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            for b in bindings or []:
                if b.get("HostPort"):
                    ports.add(int(b["HostPort"]))
    return ports


def run_preflight(site: Site, new: Settings, req: SecureRequest,
                  result: SecureResult) -> tuple[OwnCertificate | None, list[str] | None]:
    """All checks; returns the validated own certificate, and the addresses still to self-check on port 80."""
    own, pending = None, None
    if req.mode == "letsencrypt":
        preflight.check_acme_host(new.host)
        preflight.check_email(new.tls.email)
        if new.tls.acme_ca_bundle:
            certs.load_chain(Path(new.tls.acme_ca_bundle))  # readable PEM, or a one-line error now
        if new.ports.http != 80:
            result.warnings.append(f"ports.http is {new.ports.http}: the ACME server validates on port 80, "
                                   "which must be forwarded to it")
    else:
        own = certs.validate_own_certificate(req.cert_file, req.key_file, new.host)
        result.warnings += own.warnings
    preflight.check_ports(new.site.bind_address, {"http": new.ports.http, "https": new.ports.https},
                          our_published_ports(site))
    if req.mode == "letsencrypt":
        server = dns.parse_server(req.dns_server) if req.dns_server else None
        addresses = dns.resolve(new.host, server)
        public = new.tls.acme_server in (preflight.LETSENCRYPT, preflight.LETSENCRYPT_STAGING)
        result.notes += preflight.check_resolution(new.host, addresses, public, preflight.local_addresses())
        if site.settings.secured:  # our nginx serves the ACME webroot already: prove port 80 before changing anything
            result.notes.append(_selfcheck(site.with_settings(new), addresses))
        else:  # the insecure proxy does not serve it: checked right after the switch, before issuance
            pending = addresses
    return own, pending


def _selfcheck(site: Site, addresses: list[str]) -> str:
    settings = site.settings
    address = preflight.http01_selfcheck(
        settings.host, addresses, lambda token, content: volumes.place_token(site, token, content),
        bind_address=settings.site.bind_address)
    return f"port-80 self-check: http://{settings.host}/.well-known/acme-challenge/ answered through {address}"


# ---------------------------------------------------------------------------------------------------------
# backup and rollback


@dataclass
class Backup:
    dir: Path
    files: dict[Path, Path | None]  # site file -> saved copy (None: did not exist)

    @classmethod
    def take(cls, layout: SiteLayout) -> "Backup":
        where = layout.state_dir / f"secure-backup-{time.strftime('%Y%m%dT%H%M%S')}"
        where.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds copies of the TLS secrets
        files: dict[Path, Path | None] = {}
        for path in _site_files(layout):
            if path.is_file():
                copy = where / path.relative_to(layout.dir)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)
                files[path] = copy
            else:
                files[path] = None
        return cls(where, files)

    def restore(self) -> None:
        for path, copy in self.files.items():
            if copy is None:
                path.unlink(missing_ok=True)
            else:
                write_atomic(path, copy.read_bytes(), mode=copy.stat().st_mode & 0o777)


def _site_files(layout: SiteLayout) -> list[Path]:
    files = [layout.config, layout.compose, layout.nginx_conf, layout.realm, layout.orthanc_conf,
             layout.secret(OWN_CERT_SECRET), layout.secret(OWN_KEY_SECRET)]
    if layout.scripts_dir.is_dir():
        files += sorted(p for p in layout.scripts_dir.iterdir() if p.is_file())
    if layout.nginx_conf.parent.is_dir():
        files += sorted(p for p in layout.nginx_conf.parent.iterdir() if p.is_file() and p != layout.nginx_conf)
    return files


def rollback(old: Site, backup: Backup, console: Console) -> str | None:
    """Put the previous files, certificate link and realm URLs back and bring that site up. Returns a problem."""
    backup.restore()
    try:
        converge(old, console)
        point_realm(old.docker, old.settings, old.layout)
    except KheopsError as exc:
        return exc.message
    except Exception as exc:  # noqa: BLE001 - reported with the original failure
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------------------------------------------
# the switch


def apply(site: Site, rendered: RenderedSite, own: OwnCertificate | None, console: Console,
          result: SecureResult, selfcheck_addresses: list[str] | None) -> None:
    """``site`` carries the new settings."""
    new, layout = site.settings, site.layout
    write_sitefile(layout, new)
    rendered.write()
    if own is not None:
        store_own_certificate(layout, Path(new.tls.cert_file), Path(new.tls.key_file))
    converge(site, console)
    if new.site.mode == "letsencrypt":
        if selfcheck_addresses is not None:
            with console.status("port-80 self-check"):
                result.notes.append(_selfcheck(site, selfcheck_addresses))
        with console.status(f"certificate: requesting from {new.tls.acme_server}"):
            acme.issue(site)
        volumes.point_current(site, f"../live/{new.host}")
        acme.reload_nginx(site)
    with console.status("Keycloak: pointing the realm at the new root URL"):
        result.clients = point_realm(site.docker, new, layout)
    with console.status("post-switch health check"):
        result.certificate = health.check_https(new)


def run_secure(layout: SiteLayout, req: SecureRequest, console: Console) -> SecureResult:
    started = time.monotonic()
    check_environment(dict(os.environ))
    site = Site.open(layout.dir)
    old = site.settings
    new = plan(old, req)
    result = SecureResult(settings=new, previous_mode=old.site.mode)
    site.docker  # noqa: B018 - an unreachable engine stops here, before any change
    compose_command()
    own, pending = run_preflight(site, new, req, result)
    rendered = render_site(new, layout)  # in memory: a template problem stops here, before any change
    backup = Backup.take(layout)
    try:
        apply(site.with_settings(new), rendered, own, console, result, pending)
    except Exception as exc:  # whatever broke, the previous site comes back
        reason = exc.message if isinstance(exc, KheopsError) else f"{type(exc).__name__}: {exc}"
        hint = exc.hint if isinstance(exc, KheopsError) else None
        console.print(f"[yellow]switch failed, rolling back to {old.site.mode} mode:[/] {reason}", highlight=False)
        problem = rollback(site, backup, console)
        restored = (f"the site was restored to {old.site.mode} mode ({old.root_url})" if problem is None
                    else f"rollback incomplete: {problem}; previous files are back in {layout.dir}")
        raise KheopsError(f"{reason}; {restored}", hint=hint or "fix the cause and run kheopsctl secure again") from None
    shutil.rmtree(backup.dir, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result

