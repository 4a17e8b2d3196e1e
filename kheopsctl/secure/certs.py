"""Certificates: validating an operator's own certificate, describing one, and the self-signed bootstrap.

Every check raises a one-line KheopsError (exit 2: bad input) with a hint; nothing is written here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from kheopsctl.deploy.tls_material import self_signed
from kheopsctl.errors import KheopsError

WARN_DAYS = 30

__all__ = ["self_signed"]  # the bootstrap certificate is made where it is installed (deploy)


def _bad(message: str, hint: str) -> KheopsError:
    return KheopsError(message, hint=hint, exit_code=2)


@dataclass
class CertSummary:
    subject: str
    issuer: str
    not_after: dt.datetime
    days_left: int
    names: list[str]
    self_signed: bool

    def to_dict(self) -> dict:
        return {"subject": self.subject, "issuer": self.issuer, "not_after": self.not_after.isoformat(),
                "days_left": self.days_left, "names": self.names, "self_signed": self.self_signed}


@dataclass
class OwnCertificate:
    chain: list[x509.Certificate]
    summary: CertSummary
    warnings: list[str] = field(default_factory=list)


def summarize(cert: x509.Certificate, now: dt.datetime | None = None) -> CertSummary:
    now = now or dt.datetime.now(dt.timezone.utc)
    left = cert.not_valid_after_utc - now
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        days_left=left.days,
        names=san_names(cert),
        self_signed=cert.issuer == cert.subject,
    )


def san_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName) + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def load_chain(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        chain = []
    if not chain:
        raise _bad(f"{path}: no PEM certificate found",
                   hint="give the full chain in PEM (-----BEGIN CERTIFICATE-----), server certificate first")
    return chain


def load_key(path: Path):
    data = _read(path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise _bad(f"{path}: the private key is protected by a passphrase",
                   hint="nginx cannot prompt for it; export it without one: openssl pkey -in KEY -out KEY.plain") from None
    except ValueError:
        raise _bad(f"{path}: not a PEM private key", hint="give the key file (-----BEGIN PRIVATE KEY-----)") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise _bad(f"{what} file {path} not found", hint="check the path") from None
    except OSError as exc:
        raise _bad(f"cannot read {what} file {path} ({exc.strerror})", hint="check its permissions") from None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_key_matches(cert: x509.Certificate, key, key_path: Path) -> None:
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise _bad(f"{key_path}: the private key does not match the certificate ({cert.subject.rfc4514_string()})",
                   hint="give the key the certificate was issued for (compare: openssl x509 -noout -pubkey / openssl pkey -pubout)")


def check_chain_order(chain: list[x509.Certificate], cert_path: Path) -> None:
    """Each certificate must be issued by the next one: server certificate first, then its intermediates."""
    for i, (child, parent) in enumerate(zip(chain, chain[1:]), start=1):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):  # name mismatch, key type, bad signature
            raise _bad(
                f"{cert_path}: certificate {i} ({child.subject.rfc4514_string()}) is not issued by "
                f"certificate {i + 1} ({parent.subject.rfc4514_string()})",
                hint="order the file as server certificate, then intermediates (as in fullchain.pem)",
            ) from None


def host_matches(cert: x509.Certificate, host: str) -> bool:
    host = host.lower().rstrip(".")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False  # browsers ignore the CN
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        # a wildcard covers exactly one leftmost label
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def check_validity(chain: list[x509.Certificate], cert_path: Path, now: dt.datetime) -> list[str]:
    warnings = []
    for i, cert in enumerate(chain, start=1):
        which = "the certificate" if i == 1 else f"chain certificate {i} ({cert.subject.rfc4514_string()})"
        if cert.not_valid_after_utc <= now:
            raise _bad(f"{cert_path}: {which} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                       hint="renew it with your CA and run kheopsctl secure --cert again")
        if cert.not_valid_before_utc > now:
            raise _bad(f"{cert_path}: {which} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                       hint="check this host's clock, or wait until the certificate becomes valid")
    days = (chain[0].not_valid_after_utc - now).days
    if days < WARN_DAYS:
        warnings.append(f"the certificate expires in {days} days ({chain[0].not_valid_after_utc:%Y-%m-%d}): plan its renewal")
    return warnings


def validate_own_certificate(cert_path: Path, key_path: Path, host: str,
                             now: dt.datetime | None = None) -> OwnCertificate:
    """All checks of the own-certificate path, in the order an operator would fix them."""
    now = now or dt.datetime.now(dt.timezone.utc)
    chain = load_chain(cert_path)
    key = load_key(key_path)
    check_key_matches(chain[0], key, key_path)
    check_chain_order(chain, cert_path)
    if not host_matches(chain[0], host):
        names = ", ".join(san_names(chain[0])) or "none"
        raise _bad(f"{cert_path}: the certificate is not valid for {host} (its names: {names})",
                   hint="use a certificate whose subjectAltName lists the root URL's host, or change --root-url")
    warnings = check_validity(chain, cert_path, now)
    return OwnCertificate(chain=chain, summary=summarize(chain[0], now), warnings=warnings)
