"""What the site serves over TLS, checked from this host through the published ports (public Host and SNI).

The site's name may not resolve here (or resolve to a load balancer), so we connect to the published port and
send the public name as SNI and Host, like doctor does.
"""

from __future__ import annotations

import socket
import ssl
import time

import httpx
from cryptography import x509

from kheopsctl.config import Settings
from kheopsctl.errors import KheopsError
from kheopsctl.secure import certs
from kheopsctl.site.installed import local_address, public_request


def served_certificate(settings: Settings, timeout: float = 5.0) -> x509.Certificate:
    """The leaf certificate nginx presents for the site's name (not verified: this is what we look at)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((local_address(settings), settings.ports.https), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=settings.host) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def site_get(settings: Settings, path: str, scheme: str = "https", verify: bool | ssl.SSLContext = False,
             timeout: float = 10.0) -> httpx.Response:
    """GET ``path`` on the site's published port with the public Host (and SNI for https)."""
    return public_request(settings, "GET", path, scheme=scheme, verify=verify, timeout=timeout)


def check_https(settings: Settings, attempts: int = 20) -> certs.CertSummary:
    """Post-switch health check: right certificate, gateway ready, Keycloak's issuer, http -> https redirect."""
    problem = "no answer"
    for _ in range(attempts):
        try:
            problem = _check_once(settings)
            if problem is None:
                return certs.summarize(served_certificate(settings))
        except (OSError, httpx.HTTPError, ssl.SSLError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        time.sleep(1.5)
    raise KheopsError(f"post-switch health check failed: {problem}",
                      hint="see kheopsctl logs nginx, kheopsctl logs gateway and kheopsctl logs keycloak")


def _check_once(settings: Settings) -> str | None:
    leaf = served_certificate(settings)
    if not certs.host_matches(leaf, settings.host):
        return f"nginx serves a certificate for {certs.san_names(leaf)}, not {settings.host}"
    if settings.site.mode == "letsencrypt" and leaf.issuer == leaf.subject:
        return "nginx still serves the self-signed bootstrap certificate"
    ready = site_get(settings, "/health/ready")
    if ready.status_code != 200:
        return f"https {settings.root_url}/health/ready answered {ready.status_code}"
    if "strict-transport-security" not in ready.headers:
        return "no Strict-Transport-Security header on https"
    discovery = site_get(settings, f"/realms/{settings.keycloak.realm}/.well-known/openid-configuration")
    if discovery.status_code != 200:
        return f"Keycloak discovery over https answered {discovery.status_code}"
    issuer = discovery.json().get("issuer")
    if issuer != settings.issuer:
        return f"Keycloak announces issuer {issuer}, expected {settings.issuer}"
    redirect = site_get(settings, "/api/studies?x=1", scheme="http")
    location = redirect.headers.get("location", "")
    if redirect.status_code != 301 or location != f"{settings.root_url}/api/studies?x=1":
        return f"http answered {redirect.status_code} {location!r}, not a redirect to {settings.root_url}"
    return None
