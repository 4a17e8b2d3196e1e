"""Pebble (Let's Encrypt's test CA) and pebble-challtestsrv, from the kheops-test/pebble image, on a site's
Docker `edge` network, plus a TCP forwarder standing in for the public address of the site.

Why the forwarder: Pebble validates http-01 at http://<name>:80/ where <name> resolves through its own DNS
(challtestsrv). nginx's address changes whenever `kheopsctl secure` recreates it, so the name resolves to a
fixed-address forwarder that relays to the `nginx` service by name, like a router in front of a real host.

Two challtestsrv instances run: one is Pebble's DNS (its answers can be spoiled to make validation fail), the
other answers kheopsctl's `--dns-server` (published on loopback), so kheopsctl's own port-80 self-check can pass
while Pebble's validation fails.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.secure.pki import make_pki

PEBBLE_IMAGE = "kheops-test/pebble:2.4"
FORWARDER_IMAGE = "kheops-test/python:3.11-bookworm"

FORWARDER = """
import asyncio, sys
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
async def handle(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(sys.argv[1], 80)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", 80)
    await server.serve_forever()
asyncio.run(main())
"""


@dataclass
class Pebble:
    directory_url: str  # as seen from the site's containers
    listener_ca: Path  # trust this for Pebble's own HTTPS (--acme-ca-bundle)
    dns_server: str  # challtestsrv for kheopsctl's --dns-server, on loopback
    management_url: str  # Pebble's management API, on loopback
    pebble_dns_url: str  # management API of Pebble's own DNS (challtestsrv), on loopback
    site_dns_url: str  # management API of the DNS kheopsctl asks (--dns-server), on loopback
    forwarder_ip: str
    pebble_ip: str  # on the edge network; nothing listens on port 80 there (a "wrong address" that stays local)
    containers: list

    def roots_pem(self) -> bytes:
        """Pebble's issuing root (generated at start)."""
        ctx = ssl.create_default_context(cafile=str(self.listener_ca))
        ctx.check_hostname = False  # the listener certificate names `pebble`, we connect to 127.0.0.1
        return httpx.get(f"{self.management_url}/roots/0", verify=ctx, timeout=10).content

    def spoil_validation(self, host: str, address: str, dns: str = "pebble") -> None:
        """Make ``host`` resolve to ``address`` for Pebble's validation (dns="pebble") or for kheopsctl ("site")."""
        url = self.pebble_dns_url if dns == "pebble" else self.site_dns_url
        httpx.post(f"{url}/add-a", json={"host": host, "addresses": [address]}, timeout=10).raise_for_status()

    def heal_validation(self, host: str) -> None:
        for url in (self.pebble_dns_url, self.site_dns_url):
            httpx.post(f"{url}/clear-a", json={"host": host}, timeout=10).raise_for_status()

    def stop(self) -> None:
        for c in self.containers:
            try:
                c.remove(force=True)
            except Exception:
                pass


def start_pebble(client, project: str, workdir: Path) -> Pebble:
    network = f"{project}_edge"
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki()
    listener = pki.leaf("pebble", "localhost", "127.0.0.1")
    (workdir / "cert.pem").write_bytes(listener.pem + pki.intermediate.pem)
    (workdir / "key.pem").write_bytes(listener.key_pem)
    listener_ca = pki.write_root(workdir / "listener-ca.pem")
    (workdir / "config.json").write_text(json.dumps({"pebble": {
        "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
        "certificate": "/pebble/cert.pem", "privateKey": "/pebble/key.pem",
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    containers = []
    try:
        forwarder = client.containers.run(FORWARDER_IMAGE, ["python", "-c", FORWARDER, "nginx"], detach=True,
                                          name=f"{project}-test-forwarder", network=network,
                                          labels={"org.kheops.test": "secure"})
        containers.append(forwarder)
        forwarder.reload()
        forwarder_ip = forwarder.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        quiet = "-http01 '' -https01 '' -tlsalpn01 '' -defaultIPv6 ''"
        script = (f"pebble-challtestsrv -dns01 :8053 -management :8055 {quiet} -defaultIPv4 {forwarder_ip} & "
                  f"pebble-challtestsrv -dns01 :8054 -management :8056 {quiet} -defaultIPv4 {forwarder_ip} & "
                  "exec pebble -config /pebble/config.json -dnsserver 127.0.0.1:8053")
        pebble = client.containers.create(
            PEBBLE_IMAGE, ["sh", "-c", script], name=f"{project}-test-pebble", network=network,
            environment={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            volumes={str(workdir): {"bind": "/pebble", "mode": "ro"}},
            ports={"15000/tcp": ("127.0.0.1", None), "8055/tcp": ("127.0.0.1", None), "8054/udp": ("127.0.0.1", None),
                   "8056/tcp": ("127.0.0.1", None)},
            labels={"org.kheops.test": "secure"})
        # reachable from the site's containers as https://pebble:14000 (the name its listener certificate holds)
        edge = client.networks.get(network)
        edge.disconnect(pebble)
        edge.connect(pebble, aliases=["pebble"])
        pebble.start()
        containers.append(pebble)
        pebble.reload()
        ports = pebble.attrs["NetworkSettings"]["Ports"]
        pebble_obj = Pebble(
            directory_url="https://pebble:14000/dir", listener_ca=listener_ca,
            dns_server=f"127.0.0.1:{ports['8054/udp'][0]['HostPort']}",
            management_url=f"https://127.0.0.1:{ports['15000/tcp'][0]['HostPort']}",
            pebble_dns_url=f"http://127.0.0.1:{ports['8055/tcp'][0]['HostPort']}",
            site_dns_url=f"http://127.0.0.1:{ports['8056/tcp'][0]['HostPort']}",
            forwarder_ip=forwarder_ip, pebble_ip=pebble.attrs["NetworkSettings"]["Networks"][network]["IPAddress"],
            containers=containers)
        _wait_ready(pebble_obj, pebble)
        return pebble_obj
    except BaseException:
        for c in containers:
            c.remove(force=True)
        raise


def _wait_ready(p: Pebble, container) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if p.roots_pem().startswith(b"-----BEGIN CERTIFICATE-----"):
                httpx.post(f"{p.pebble_dns_url}/clear-a", json={"host": "probe.test"}, timeout=2).raise_for_status()
                return
        except (httpx.HTTPError, ssl.SSLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError("Pebble did not start: " + container.logs(tail=30).decode(errors="replace"))


def purge_project(project: str) -> None:
    """Remove every container, volume and network of a test module's own compose project (and its Pebble).

    The project name belongs to that module alone, so whatever carries it is a leftover of an interrupted run;
    its volumes would hold a database initialised with other secrets.
    """
    import docker

    client = docker.from_env()
    label = {"label": f"com.docker.compose.project={project}"}
    for c in client.containers.list(all=True, filters=label, ignore_removed=True):
        c.remove(force=True)
    for name in (f"{project}-test-pebble", f"{project}-test-forwarder"):
        for c in client.containers.list(all=True, filters={"name": f"^{name}$"}, ignore_removed=True):
            c.remove(force=True)
    for v in client.volumes.list(filters=label):
        v.remove(force=True)
    for n in client.networks.list(filters=label):
        n.remove()


def fresh_stack(directory: Path, project: str, http: int, https: int, keycloak: int):
    """A stack of a test module's own compose project and ports, not installed yet, with any leftover of that
    project purged first."""
    from tests.stackfixture import Stack, require_stack_prerequisites, stack_env

    require_stack_prerequisites()
    purge_project(project)
    return Stack(dir=directory, env=stack_env(KHEOPS_PROJECT=project, KHEOPS_PORTS__HTTP=str(http),
                                              KHEOPS_PORTS__HTTPS=str(https), KHEOPS_PORTS__KEYCLOAK=str(keycloak)))
