"""Live, secured sites only: the certificate nginx serves (chain, hostname, expiry) and the HTTP→HTTPS redirect.

``probe_tls()`` is a plain function of an address, a port and a name so it can be tested against any real TLS
server; the checks call it with the site's published HTTPS port and its public host name.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass, field

import httpx
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, skip, warn

EXPIRY_WARN_DAYS = 30


@dataclass
class TlsFacts:
    verified: bool
    verify_error: str = ""
    subject: str = ""
    issuer: str = ""
    names: list[str] = field(default_factory=list)
    not_after: dt.datetime | None = None
    self_signed: bool = False
    protocol: str = ""

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400

    def to_dict(self) -> dict:
        return {"verified": self.verified, "verify_error": self.verify_error, "subject": self.subject,
                "issuer": self.issuer, "names": self.names, "self_signed": self.self_signed,
                "not_after": self.not_after.isoformat() if self.not_after else None, "protocol": self.protocol}


def probe_tls(address: str, port: int, server_name: str, context: ssl.SSLContext | None = None,
              timeout: float = 5.0) -> TlsFacts:
    """Handshake with full verification (chain + hostname); if that fails, again without, to describe the cert."""
    context = context or ssl.create_default_context()
    try:
        der, protocol = _handshake(address, port, server_name, context, timeout)
        facts = TlsFacts(verified=True)
    except ssl.SSLCertVerificationError as exc:
        loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        loose.check_hostname = False
        loose.verify_mode = ssl.CERT_NONE
        der, protocol = _handshake(address, port, server_name, loose, timeout)
        facts = TlsFacts(verified=False, verify_error=exc.verify_message or str(exc))
    cert = x509.load_der_x509_certificate(der)
    facts.protocol = protocol
    facts.subject = cert.subject.rfc4514_string()
    facts.issuer = cert.issuer.rfc4514_string()
    facts.self_signed = cert.subject == cert.issuer
    facts.not_after = cert.not_valid_after_utc
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        facts.names = [str(n) for n in san.get_values_for_type(x509.DNSName)] + [
            str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        facts.names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return facts


def _handshake(address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
    with socket.create_connection((address, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True), tls.version() or ""


def site_tls(ctx: DoctorContext) -> TlsFacts:
    return ctx.memo("tls", lambda: probe_tls(ctx.local_address, ctx.settings.ports.https, ctx.settings.host,
                                             ctx.ssl_context()))


def _not_secured(ctx: DoctorContext) -> Outcome | None:
    if not ctx.settings.secured:
        return skip("the site is not secured (site.mode=insecure); `kheopsctl secure` enables TLS")
    return None


@check("tls.certificate", "live", "secured sites: the served certificate chains to a trusted CA and names the host")
def tls_certificate(ctx: DoctorContext) -> Outcome:
    return certificate_outcome(ctx, _facts_or_outcome(ctx))


def _facts_or_outcome(ctx: DoctorContext):
    not_secured = _not_secured(ctx)
    if not_secured:
        return not_secured
    try:
        return site_tls(ctx)
    except (OSError, ssl.SSLError) as exc:
        return fail(f"no TLS handshake on {ctx.local_address}:{ctx.settings.ports.https}: {exc}",
                    "check container.nginx and that ports.https is published")


def certificate_outcome(ctx: DoctorContext, facts) -> Outcome:
    if isinstance(facts, Outcome):
        return facts
    host = ctx.settings.host
    details = facts.to_dict()
    if facts.verified:
        return ok(f"{facts.protocol}, certificate for {', '.join(facts.names)} issued by {facts.issuer}", **details)
    mode = ctx.settings.site.mode
    if facts.self_signed and mode == "letsencrypt":
        hint = ("nginx still serves the self-signed bootstrap certificate: check the certbot container's logs "
                "and that port 80 of this host is reachable from the internet for the ACME challenge")
    elif "hostname" in facts.verify_error.lower() or "ip address mismatch" in facts.verify_error.lower():
        hint = f"the certificate names {', '.join(facts.names) or 'nothing'}, not {host}: issue one for {host}"
    elif "expired" in facts.verify_error.lower():
        hint = ("certbot renews it automatically: read the certbot container's logs" if mode == "letsencrypt"
                else "install a renewed certificate with `kheopsctl secure`")
    elif mode == "custom":
        hint = ("give the full chain (leaf then intermediates) with `kheopsctl secure`, or, for a private CA, "
                "add it to gateway.ca_bundle (or SSL_CERT_FILE) so this host trusts it")
    else:
        hint = (f"issued by {facts.issuer}, which this host does not trust: with a staging or test ACME server "
                "trust its root (SSL_CERT_FILE), otherwise run `kheopsctl secure` against the production one")
    return fail(f"certificate not trusted for {host}: {facts.verify_error}", hint, **details)


@check("tls.expiry", "live", "secured sites: days until the served certificate expires (warn < 30, fail expired)")
def tls_expiry(ctx: DoctorContext) -> Outcome:
    return expiry_outcome(ctx.settings.site.mode, _facts_or_outcome(ctx))


def expiry_outcome(mode: str, facts, now: dt.datetime | None = None) -> Outcome:
    if isinstance(facts, Outcome):
        return facts if facts.status == "skip" else skip("no certificate to read (see tls.certificate)")
    days = facts.days_left(now)
    details = {"not_after": facts.not_after.isoformat(), "days_left": round(days, 1)}
    renew = ("certbot renews it automatically; read the certbot container's logs" if mode == "letsencrypt"
             else "install a renewed certificate with `kheopsctl secure`")
    if days < 0:
        return fail(f"the certificate expired on {facts.not_after:%Y-%m-%d} ({-days:.0f} days ago)", renew, **details)
    if days < EXPIRY_WARN_DAYS:
        return warn(f"the certificate expires in {days:.0f} days ({facts.not_after:%Y-%m-%d})", renew, **details)
    return ok(f"valid for {days:.0f} more days (until {facts.not_after:%Y-%m-%d})", **details)


@check("tls.redirect", "live", "secured sites: plain HTTP redirects to HTTPS")
def tls_redirect(ctx: DoctorContext) -> Outcome:
    not_secured = _not_secured(ctx)
    if not_secured:
        return not_secured
    s = ctx.settings
    host = f"[{s.host}]" if ":" in s.host else s.host
    public = f"http://{host}{'' if s.ports.http == 80 else f':{s.ports.http}'}/api/"
    try:
        r = ctx.site_request("GET", public)
    except httpx.HTTPError as exc:
        return fail(f"nothing answers on HTTP ({public}): {exc}", "check container.nginx and ports.http")
    location = r.headers.get("location", "")
    details = {"status": r.status_code, "location": location}
    if r.status_code in (301, 302, 307, 308) and location.startswith(ctx.settings.root_url + "/"):
        return ok(f"HTTP {r.status_code} to {location}", **details)
    return fail(f"plain HTTP answers {r.status_code}" + (f" to {location}" if location else "") +
                " instead of redirecting to " + ctx.settings.root_url,
                "re-run `kheopsctl secure` so nginx is rendered with the redirect", **details)
