"""A small test PKI built with cryptography: root -> intermediate -> leaf, with the defects the tests need."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def issue(cn: str, issuer: Issued | None = None, *, ca: bool = False, names: list[str] | None = None,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(issuer.cert.subject if issuer else _name(cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - dt.timedelta(days=1))
               .not_valid_after(not_after or NOW + dt.timedelta(days=90))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        alts: list[x509.GeneralName] = []
        for n in names:
            try:
                alts.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alts.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alts), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(cert, key)


@dataclass
class Pki:
    root: Issued
    intermediate: Issued

    def leaf(self, *names: str, **kw) -> Issued:
        return issue(names[0] if names else "leaf", self.intermediate, names=list(names), **kw)

    def write(self, directory: Path, leaf: Issued, chain: list[Issued] | None = None,
              key: Issued | None = None) -> tuple[Path, Path]:
        """fullchain.pem (leaf + intermediate unless ``chain`` given) and privkey.pem; returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        parts = chain if chain is not None else [leaf, self.intermediate]
        fullchain = directory / "fullchain.pem"
        fullchain.write_bytes(b"".join(p.pem for p in parts))
        privkey = directory / "privkey.pem"
        privkey.write_bytes((key or leaf).key_pem)
        return fullchain, privkey

    def write_root(self, path: Path) -> Path:
        path.write_bytes(self.root.pem)
        return path


def make_pki() -> Pki:
    root = issue("kheopsctl test root", ca=True, not_after=NOW + dt.timedelta(days=3650))
    return Pki(root, issue("kheopsctl test intermediate", root, ca=True, not_after=NOW + dt.timedelta(days=1825)))
