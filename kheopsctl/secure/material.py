"""TLS material nginx needs before it starts on 443, in the `certs` volume. Idempotent.

Called by `kheopsctl secure` during the switch, and meant for `kheopsctl install` in a secured mode too (a purged
`certs` volume would otherwise keep nginx from starting):
- custom: the operator's certificate, from the copy kept in secrets/ (0600), becomes kheops/custom;
- letsencrypt: certbot's live/HOST when it exists, else a fresh self-signed bootstrap certificate (the renewal
  loop does not issue: run `kheopsctl secure --letsencrypt` again to get a real one).
"""

from __future__ import annotations

import time
from pathlib import Path

from kheopsctl.config import Settings
from kheopsctl.deploy.fsutil import write_atomic
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.errors import KheopsError
from kheopsctl.secure import certs, volumes

OWN_CERT_SECRET = "tls_fullchain.pem"
OWN_KEY_SECRET = "tls_privkey.pem"


def store_own_certificate(layout: SiteLayout, cert_file: Path, key_file: Path) -> None:
    """Copy the operator's files into secrets/ (0600); a different previous copy is kept aside, never overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name, source in ((OWN_CERT_SECRET, cert_file), (OWN_KEY_SECRET, key_file)):
        data = Path(source).read_bytes()
        path = layout.secret(name)
        if path.exists() and path.read_bytes() != data:
            path.rename(path.with_name(f"{name}.replaced-{stamp}"))
        write_atomic(path, data, mode=0o600)


def ensure_tls_material(client, settings: Settings, layout: SiteLayout) -> str:
    """Make kheops/current point at usable files for ``settings``; returns what it points at."""
    if settings.site.mode == "custom":
        try:
            fullchain = layout.secret(OWN_CERT_SECRET).read_bytes()
            key = layout.secret(OWN_KEY_SECRET).read_bytes()
        except FileNotFoundError:
            raise KheopsError("custom mode, but secrets/tls_fullchain.pem or tls_privkey.pem is missing",
                              hint="run kheopsctl secure --cert FULLCHAIN --key PRIVKEY again") from None
        volumes.install_pair(client, settings, "custom", fullchain, key)
        volumes.point_current(client, settings, "custom")
        return "custom"
    live = f"../live/{settings.host}"
    if volumes.read_file(client, settings, f"{volumes.CERTS_MOUNT}/live/{settings.host}/fullchain.pem") is not None:
        volumes.point_current(client, settings, live)
        return live
    cert, key = certs.self_signed(settings.host)
    volumes.install_pair(client, settings, "bootstrap", cert, key)
    volumes.point_current(client, settings, "bootstrap")
    return "bootstrap"
