"""TLS material nginx needs before it starts on 443, in the `certs` volume. Idempotent.

Called by `converge` (install, secure and its rollback) for a secured site (a purged
`certs` volume would otherwise keep nginx from starting):
- custom: the operator's certificate, from the copy kept in secrets/ (0600), becomes kheops/custom;
- letsencrypt: certbot's live/HOST when it exists, else a fresh self-signed bootstrap certificate (the renewal
  loop does not issue: run `kheopsctl secure --letsencrypt` again to get a real one).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kheopsctl.errors import KheopsError
from kheopsctl.site import Secret, Site, SiteLayout
from kheopsctl.site import certs_volume as volumes
from kheopsctl.site.fsutil import write_atomic

OWN_CERT_SECRET = Secret.TLS_FULLCHAIN.value
OWN_KEY_SECRET = Secret.TLS_PRIVKEY.value


def store_own_certificate(layout: SiteLayout, cert_file: Path, key_file: Path) -> None:
    """Copy the operator's files into secrets/ (0600); a different previous copy is kept aside, never overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name, source in ((OWN_CERT_SECRET, cert_file), (OWN_KEY_SECRET, key_file)):
        data = Path(source).read_bytes()
        path = layout.secret(name)
        if path.exists() and path.read_bytes() != data:
            path.rename(path.with_name(f"{name}.replaced-{stamp}"))
        write_atomic(path, data, mode=0o600)


def ensure_tls_material(site: Site) -> str:
    """Make kheops/current point at usable files for the site's settings; returns what it points at."""
    settings, layout = site.settings, site.layout
    if settings.site.mode == "custom":
        try:
            fullchain = layout.secret(OWN_CERT_SECRET).read_bytes()
            key = layout.secret(OWN_KEY_SECRET).read_bytes()
        except FileNotFoundError:
            raise KheopsError("custom mode, but secrets/tls_fullchain.pem or tls_privkey.pem is missing",
                              hint="run kheopsctl secure --cert FULLCHAIN --key PRIVKEY again") from None
        volumes.install_pair(site, "custom", fullchain, key)
        volumes.point_current(site, "custom")
        return "custom"
    live = f"../live/{settings.host}"
    if volumes.read_file(site, f"{volumes.CERTS_MOUNT}/live/{settings.host}/fullchain.pem") is not None:
        volumes.point_current(site, live)
        return live
    cert, key = self_signed(settings.host)
    volumes.install_pair(site, "bootstrap", cert, key)
    volumes.point_current(site, "bootstrap")
    return "bootstrap"


def self_signed(host: str, days: int = 30) -> tuple[bytes, bytes]:
    """A throwaway certificate so nginx can start on 443 before the real one is issued (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kheopsctl bootstrap (not trusted)")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
