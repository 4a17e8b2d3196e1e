"""The container half of the pipeline, for files already rendered: images, TLS material, compose up.

One function for `install`, `secure` and secure's rollback, so the three bring a site up the same way.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from rich.console import Console

from kheopsctl.deploy.gateway_image import ensure_gateway_image
from kheopsctl.deploy.keycloak_image import ensure_keycloak_image
from kheopsctl.deploy.provision import UpResult, bring_up
from kheopsctl.deploy.tls_material import ensure_tls_material
from kheopsctl.site import Site


@dataclass
class Converged:
    built_gateway_image: bool
    up: UpResult


def converge(site: Site, console: Console, timings: dict[str, float] | None = None) -> Converged:
    """Images current (built when their inputs changed), TLS material in place (secured sites), every service
    healthy. ``timings`` collects the seconds per step."""
    timings = {} if timings is None else timings
    with _timed(timings, "images"), console.status("gateway image: checking") as status:
        built = ensure_gateway_image(site.docker, site.settings,
                                     on_line=lambda line: status.update(f"gateway image: {line[:100]}"))
        status.update("Keycloak image: checking")
        ensure_keycloak_image(site.docker, site.settings,
                              on_line=lambda line: status.update(f"Keycloak image: {line[:100]}"))
    if site.settings.secured:  # nginx needs a certificate on 443 even if the certs volume was purged
        with console.status("certificates: preparing"):
            ensure_tls_material(site)
    with _timed(timings, "bring_up"):
        up = bring_up(site, console)
    return Converged(built, up)


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str):
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[step] = time.monotonic() - t0
