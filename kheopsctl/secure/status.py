"""`kheopsctl secure --status`: the mode, and the certificate the site serves (subject, issuer, days left)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from kheopsctl.secure import certs, health
from kheopsctl.site import Site
from kheopsctl.site import certs_volume as volumes


@dataclass
class TlsStatus:
    mode: str
    root_url: str
    certificate: certs.CertSummary | None
    source: str  # served | volume | none
    problem: str | None = None

    def to_json(self) -> dict:
        return {"mode": self.mode, "root_url": self.root_url, "source": self.source, "problem": self.problem,
                "certificate": self.certificate.to_dict() if self.certificate else None}


def tls_status(site: Site) -> TlsStatus:
    settings = site.settings
    if not settings.secured:
        return TlsStatus(settings.site.mode, settings.root_url, None, "none")
    try:
        return TlsStatus(settings.site.mode, settings.root_url,
                         certs.summarize(health.served_certificate(settings)), "served")
    except OSError as exc:
        problem = f"nothing answers TLS on port {settings.ports.https} ({exc.strerror or exc})"
    # nginx is down: report what it would serve
    pem = volumes.read_file(site, f"{volumes.CERTS_MOUNT}/{volumes.CURRENT}/fullchain.pem")
    if pem is None:
        return TlsStatus(settings.site.mode, settings.root_url, None, "none", problem + "; no certificate installed")
    leaf = x509.load_pem_x509_certificates(pem)[0]
    return TlsStatus(settings.site.mode, settings.root_url, certs.summarize(leaf), "volume", problem)
