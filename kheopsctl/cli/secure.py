"""`kheopsctl secure`: move the site to HTTPS (Let's Encrypt / any ACME server, or an own certificate), or show TLS status."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kheopsctl.cli.common import DirOption, JsonOption, console, emit_json
from kheopsctl.errors import UsageError
from kheopsctl.secure.status import tls_status
from kheopsctl.secure.switch import SecureRequest, run_secure
from kheopsctl.site import Site, SiteLayout


def command(
    dir: Path = DirOption,  # noqa: A002
    letsencrypt: bool = typer.Option(False, "--letsencrypt", help="Get a certificate from Let's Encrypt (or --acme-server)."),
    cert: Optional[Path] = typer.Option(None, "--cert", help="Own certificate: full chain PEM, server certificate first."),
    key: Optional[Path] = typer.Option(None, "--key", help="Own certificate: private key PEM (no passphrase)."),
    root_url: Optional[str] = typer.Option(None, "--root-url", help="New public URL, https://HOST[:PORT]."),
    email: Optional[str] = typer.Option(None, "--email", help="ACME account email (expiry notices)."),
    acme_server: Optional[str] = typer.Option(None, "--acme-server", help="ACME directory URL (default: Let's Encrypt)."),
    acme_ca_bundle: Optional[Path] = typer.Option(None, "--acme-ca-bundle", help="CA bundle to trust for the ACME server's HTTPS."),
    staging: bool = typer.Option(False, "--staging", help="Use Let's Encrypt's staging server (untrusted test certificates)."),
    dns_server: Optional[str] = typer.Option(None, "--dns-server", help="Check the name against this DNS server (IP[:PORT]) instead of the system resolver."),
    status: bool = typer.Option(False, "--status", help="Show the mode and the served certificate."),
    json_out: bool = JsonOption,
) -> None:
    """Switch the site to TLS after checking everything first; roll back if issuance or the health check fails."""
    layout = SiteLayout(dir)
    chosen = [name for name, on in (("--letsencrypt", letsencrypt), ("--cert/--key", cert or key), ("--status", status)) if on]
    if len(chosen) != 1:
        raise UsageError("choose exactly one of --letsencrypt, --cert/--key or --status"
                         + (f" (got {', '.join(chosen)})" if chosen else ""),
                         hint="kheopsctl secure --letsencrypt --root-url https://HOST --email ADDR")
    if status:
        _status(Site.open(dir), json_out)
        return
    if letsencrypt:
        if cert or key:
            raise UsageError("--letsencrypt cannot be combined with --cert/--key",
                             hint="choose one: an ACME certificate, or your own")
        req = SecureRequest("letsencrypt", root_url=root_url, email=email, acme_server=acme_server,
                            acme_ca_bundle=acme_ca_bundle, staging=staging, dns_server=dns_server)
        if not root_url:
            raise UsageError("--root-url is required with --letsencrypt",
                             hint="the public https URL, e.g. --root-url https://kheops.example.org")
    else:
        if not (cert and key):
            raise UsageError("--cert and --key go together", hint="kheopsctl secure --cert fullchain.pem --key privkey.pem")
        if email or acme_server or acme_ca_bundle or staging:
            raise UsageError("--email/--acme-server/--acme-ca-bundle/--staging only apply to --letsencrypt",
                             hint="leave them out with --cert/--key")
        req = SecureRequest("custom", root_url=root_url, cert_file=cert, key_file=key)
    result = run_secure(layout, req, console)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for note in result.notes:
        console.print(f"  {note}", highlight=False)
    c = result.certificate
    console.print(f"[green]secured[/] ({result.settings.site.mode}, {result.seconds:.0f}s): {result.settings.root_url}",
                  highlight=False)
    if c:
        console.print(f"  certificate: {c.subject}, issued by {c.issuer}, {c.days_left} days left", highlight=False)
    console.print(f"  Keycloak redirect URIs: {', '.join(u for cl in result.clients for u in cl.redirect_uris)}",
                  highlight=False)
    if json_out:
        emit_json(result.to_json())


def _status(site: Site, json_out: bool) -> None:
    st = tls_status(site)
    if json_out:
        emit_json(st.to_json())
        return
    console.print(f"mode: {st.mode} ({st.root_url})", highlight=False)
    if st.certificate:
        c = st.certificate
        console.print(f"certificate ({st.source}): {c.subject}", highlight=False)
        console.print(f"  issuer:    {c.issuer}", highlight=False)
        console.print(f"  names:     {', '.join(c.names) or '-'}", highlight=False)
        console.print(f"  expires:   {c.not_after:%Y-%m-%d} ({c.days_left} days left)", highlight=False)
    if st.problem:
        console.print(f"[yellow]warning:[/] {st.problem}", highlight=False)
