"""Pre-flight of `kheopsctl secure`: everything is checked before the site changes.

Each check raises a one-line KheopsError with a hint; the ones that can only guess (a name that resolves to an
address that is not on this host may be right behind NAT) return notes instead, and the port-80 self-check decides.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import secrets
import socket
import subprocess
from typing import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from kheopsctl.errors import KheopsError

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+)$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _bad(message: str, hint: str) -> KheopsError:
    return KheopsError(message, hint=hint, exit_code=2)


def check_https_root_url(url: str) -> str:
    """The root URL of a secured site: https, no path. Returns the host."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise _bad(f"--root-url: {url!r} must be an https URL", hint="for example --root-url https://kheops.example.org")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise _bad(f"--root-url: {url!r} must be scheme and host only", hint="KHEOPS is served at the root of its host")
    return parts.hostname


def check_acme_host(host: str) -> None:
    """Let's Encrypt issues for public DNS names only: no IP address, no loopback, no single label."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise _bad(f"--root-url: {host} is an IP address; Let's Encrypt only certifies DNS names",
                   hint="point a DNS name at this host and use it, or use --cert with your own certificate")
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise _bad(f"--root-url: {host} is a loopback name", hint="use the public DNS name of this host")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise _bad(f"--root-url: {host} is not a fully qualified DNS name",
                   hint="use a name such as kheops.example.org that resolves to this host")


def check_email(address: str) -> None:
    if not address:
        raise _bad("--email is required with --letsencrypt",
                   hint="give an address you read: the ACME server sends expiry warnings there")
    if not _EMAIL.match(address) or len(address) > 254:
        raise _bad(f"--email: {address!r} is not a valid email address", hint="for example --email pacs-admin@hospital.org")


def local_addresses() -> set[str]:
    """Addresses configured on this host's interfaces (iproute2), plus loopback."""
    found = {"127.0.0.1", "::1"}
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=True).stdout
        for iface in json.loads(out):
            for addr in iface.get("addr_info", []):
                found.add(addr["local"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        pass
    return found


def check_resolution(host: str, addresses: list[str], public_acme: bool, local: Iterable[str]) -> list[str]:
    """Judge what ``host`` resolved to. Returns notes; raises when issuance cannot work."""
    if not addresses:
        raise KheopsError(f"{host} does not resolve",
                          hint=f"create an A (or AAAA) record for {host} pointing at this host's public address")
    ips = [ipaddress.ip_address(a) for a in addresses]
    if public_acme and all(ip.is_loopback or ip.is_private or ip.is_link_local for ip in ips):
        raise KheopsError(f"{host} resolves to {', '.join(addresses)}, a private address Let's Encrypt cannot reach",
                          hint="publish a public A record (split-horizon DNS? check with --dns-server 1.1.1.1)")
    local = set(local)
    if any(a in local for a in addresses):
        return [f"{host} resolves to {', '.join(addresses)}: this host"]
    return [f"{host} resolves to {', '.join(addresses)}, not an address of this host "
            "(fine behind NAT or a load balancer; the port-80 self-check decides)"]


def port_in_use(bind_address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in bind_address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind_address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            if exc.errno == errno.EACCES:
                raise KheopsError(f"not allowed to listen on port {port}",
                                  hint="run kheopsctl as root (Docker publishes the port for the site)") from None
            raise
    return False


def check_ports(bind_address: str, ports: dict[str, int], ours: set[int]) -> None:
    """Each port must be free, or published by this site's own containers."""
    for name, port in ports.items():
        if port in ours:
            continue
        if port_in_use(bind_address, port):
            raise KheopsError(f"port {port} ({name}) on {bind_address} is used by another program",
                              hint=f"stop it (find it with: ss -ltnp 'sport = :{port}') or set ports.{name} in kheops.toml")


TokenPlacer = Callable[[str, str], Callable[[], None]]


def http01_selfcheck(host: str, addresses: list[str], place_token: TokenPlacer, port: int = 80,
                     bind_address: str = "") -> str:
    """Serve a random token through our nginx and fetch it the way the ACME server will: http://HOST:80/.

    ``place_token(name, content)`` publishes the token and returns a cleanup callable. Returns the address that
    answered; raises with an explanation (firewall, another server, redirect) otherwise.
    """
    token = secrets.token_urlsafe(24)
    content = secrets.token_urlsafe(32)
    cleanup = place_token(token, content)
    problems = []
    try:
        for address in addresses:
            url_host = f"[{address}]" if ":" in address else address
            url = f"http://{url_host}:{port}{ACME_CHALLENGE_PATH}{token}"
            try:
                response = httpx.get(url, headers={"Host": host}, timeout=5.0, follow_redirects=False)
            except httpx.TimeoutException:
                problems.append(f"{address}:{port} timed out (a firewall drops the traffic?)")
                continue
            except httpx.TransportError as exc:
                problems.append(f"{address}:{port} refused the connection ({exc.__class__.__name__})")
                continue
            if response.status_code == 200 and response.text.strip() == content:
                return address
            server = response.headers.get("server", "unknown server")
            problems.append(f"{address}:{port} answered HTTP {response.status_code} from {server!r} without our token "
                            "(another web server, or a proxy in front)")
    finally:
        cleanup()
    hint = "open port 80 to this host (firewall, port forwarding) and make the DNS record point here"
    if bind_address in ("127.0.0.1", "::1"):
        hint = "site.bind_address is loopback: set it to 0.0.0.0 in kheops.toml so port 80 is reachable, then retry"
    raise KheopsError(f"port-80 self-check failed for {host}: {'; '.join(problems)}", hint=hint)
