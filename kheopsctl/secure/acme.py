"""Certificate issuance with certbot, in the site's own `certbot` service container.

Why certbot in the container rather than the `acme` library on the host: the certificate must be renewed
unattended for years by the compose `certbot` service. Issuing with that very service stores the lineage
(live/, archive/, renewal/HOST.conf with the ACME server, webroot and deploy hook) in the `certs` volume, so
`certbot renew` in the renewal loop repeats exactly what worked, with the same CA bundle and network.
"""

from __future__ import annotations

import re

from kheopsctl.config import Settings
from kheopsctl.errors import KheopsError
from kheopsctl.site import Site
from kheopsctl.site import certs_volume as volumes

# certbot's deploy hook; nginx's wrapper reloads when this file changes
DEPLOY_HOOK = f"date >> {volumes.RENEWED_MARKER}"


def certonly_args(settings: Settings) -> list[str]:
    return [
        "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
        "--email", settings.tls.email,
        "--webroot", "--webroot-path", volumes.WEBROOT_MOUNT,
        "--domain", settings.host, "--cert-name", settings.host,
        "--server", settings.tls.acme_server,
        "--deploy-hook", DEPLOY_HOOK,
        # a valid certificate for this name is kept: re-running secure does not burn the rate limit
        "--keep-until-expiring",
    ]


def issue(site: Site, timeout: float = 300) -> None:
    """Run certbot certonly in a one-off `certbot` container; raise with certbot's own reason on failure."""
    settings = site.settings
    result = site.compose("run", "--rm", "--no-deps", "--entrypoint", "certbot", "certbot",
                         *certonly_args(settings), check=False, timeout=timeout)
    if result.returncode != 0:
        raise KheopsError(f"certificate issuance failed: {explain(result.stdout + result.stderr)}",
                          hint=_hint(result.stdout + result.stderr, settings))


def explain(output: str) -> str:
    """The most telling line of certbot's output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for pattern in (r"^Detail:", r"urn:ietf:params:acme:error", r"^Type:", r"Error|error|failed|Failed"):
        for line in lines:
            if re.search(pattern, line) and "Saving debug log" not in line and "Ask for help" not in line:
                return line[:300]
    return lines[-1][:300] if lines else "certbot exited without output"


def _hint(output: str, settings: Settings) -> str:
    low = output.lower()
    # certbot prints the ACME problem as "Type: connection" (or the urn:ietf:params:acme:error:connection URN)
    if re.search(r"(type:\s*|acme:error:)(connection|unauthorized|dns|incorrectresponse)\b", low):
        return (f"the ACME server could not fetch http://{settings.host}/.well-known/acme-challenge/: check that "
                f"{settings.host} resolves to this host and that port 80 reaches it")
    if "ratelimited" in low or "too many" in low:
        return "Let's Encrypt rate limit: wait, or try the whole path with --staging first"
    if "certificate verify failed" in low:
        return "the ACME server's TLS certificate is not trusted: pass its CA with --acme-ca-bundle"
    if "max retries exceeded" in low or "failed to establish" in low or "name or service not known" in low:
        return f"cannot reach the ACME server {settings.tls.acme_server}: check the URL and outbound HTTPS"
    return "see the reason above (kheopsctl logs certbot for renewals), fix it and run kheopsctl secure again"


def reload_nginx(site: Site) -> None:
    """Graceful reload: new connections get the new certificate, open ones finish on the old workers."""
    site.compose("exec", "-T", "nginx", "nginx", "-s", "reload", timeout=60)
