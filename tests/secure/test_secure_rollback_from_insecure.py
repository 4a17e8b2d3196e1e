"""`kheopsctl secure --letsencrypt` failing on a site that starts in INSECURE mode (the usual first run) rolls
the whole switch back: files byte for byte, site.mode, every service healthy, plain-HTTP readiness, and the
Keycloak client URLs.

Its OWN stack (project/ports below, apart from the shared session stack and from test_secure_e2e.py's), with
a real Pebble + pebble-challtestsrv whose DNS sends Pebble's http-01 validation to an address where port 80 is
closed: kheopsctl's own port-80 self-check passes (its --dns-server points at the forwarder in front of nginx),
so the switch really happens (nginx on 80+443, Keycloak recreated for the https root URL) before issuance
fails, which is the path the rollback must undo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.secure.pebble import fresh_stack, purge_project, start_pebble
from tests.secure.test_secure_e2e import _one_line_error, _redirect_uris
from tests.stackfixture import Stack, describe_failure

pytestmark = pytest.mark.docker

PROJECT = os.environ.get("KHEOPS_SECURE_INSECURE_TEST_PROJECT", "ksecins")
HTTP, HTTPS, KEYCLOAK = (int(p) for p in
                         os.environ.get("KHEOPS_SECURE_INSECURE_TEST_PORTS", "29180,29543,29181").split(","))
HOST = "kheops.test"
ROOT = f"https://{HOST}:{HTTPS}"


def _site_files(stack: Stack) -> dict[str, bytes]:
    """kheops.toml, every rendered file and the secrets, byte for byte (the backup area itself excluded)."""
    return {str(p.relative_to(stack.dir)): p.read_bytes() for p in sorted(stack.dir.rglob("*"))
            if p.is_file() and ".kheopsctl" not in p.relative_to(stack.dir).parts}


def test_failed_letsencrypt_from_insecure_restores_the_site(tmp_path_factory):
    stack = fresh_stack(tmp_path_factory.mktemp("secure-insecure") / "kheops", PROJECT, HTTP, HTTPS, KEYCLOAK)
    pebble = None
    try:
        result = stack.install()
        assert result.returncode == 0, "install of the test stack failed: " + describe_failure(result)
        # kheops.toml holds the root URL now; an environment override would win over what secure writes
        stack.env.pop("KHEOPS_ROOT_URL", None)
        old = stack.settings
        assert old.site.mode == "insecure" and old.root_url == f"http://127.0.0.1:{HTTP}"
        files_before = _site_files(stack)
        assert "kheops.toml" in files_before and "docker-compose.yml" in files_before
        uris_before = _redirect_uris(stack)
        assert uris_before[0] == [f"{old.root_url}/*"], uris_before  # the realm is bound to the insecure root

        import docker

        pebble = start_pebble(docker.from_env(), PROJECT, tmp_path_factory.mktemp("pebble-insecure"))
        # Pebble's DNS answers with its own address (port 80 closed): the challenge is unreachable for it,
        # while the DNS kheopsctl asks still points at the forwarder, so the self-check passes
        pebble.spoil_validation(HOST, pebble.pebble_ip)
        result = stack.run("secure", "--letsencrypt", "--root-url", ROOT, "--email", "ops@kheops.test",
                           "--acme-server", pebble.directory_url, "--acme-ca-bundle", str(pebble.listener_ca),
                           "--dns-server", pebble.dns_server, timeout=900)
        _one_line_error(result, 1, "certificate issuance failed",
                        f"the site was restored to insecure mode ({old.root_url})")
        # the switch really happened (self-check passed, issuance failed) and was undone, not refused up front
        assert "switch failed, rolling back to insecure mode" in result.stderr, describe_failure(result)

        # files: byte for byte, none added, none lost
        files_after = _site_files(stack)
        assert sorted(files_after) == sorted(files_before)
        changed = [name for name in files_before if files_after[name] != files_before[name]]
        assert changed == [], f"changed by the failed switch: {changed}"
        assert stack.settings.site.mode == "insecure" and stack.settings.root_url == old.root_url

        # containers: exactly the insecure services (no leftover certbot), all healthy again
        status = stack.run("status", "--json")
        assert status.returncode == 0, describe_failure(status)
        st = json.loads(status.stdout)
        assert st["healthy"] is True and st["root_url"] == old.root_url, st
        assert sorted(st["services"]) == ["gateway", "keycloak", "nginx", "orthanc", "postgres"], st["services"]
        assert all(s["state"] in ("healthy", "running") for s in st["services"].values()), st["services"]

        # served again over plain HTTP, Keycloak on its own published port, the realm bound to the old root
        assert httpx.get(f"http://127.0.0.1:{HTTP}/health/ready", timeout=15).status_code == 200
        discovery = httpx.get(f"http://127.0.0.1:{KEYCLOAK}/realms/kheops/.well-known/openid-configuration",
                              timeout=15)
        assert discovery.status_code == 200 and discovery.json()["issuer"] == old.issuer
        assert _redirect_uris(stack) == uris_before
    finally:
        if pebble is not None:
            pebble.stop()
        if os.environ.get("KHEOPS_KEEP_STACK") != "1":
            down = stack.down(purge=True)
            if down.returncode != 0:
                purge_project(PROJECT)
