"""`kheopsctl users` on a SECURED site (own certificate, on its own installed stack: securing changes the site,
so the shared session stack is left alone). Keycloak is no longer published and /admin is closed: kheopsctl
reaches the admin API on the site's Docker network, and the user logs in over TLS through Keycloak's form."""

from __future__ import annotations

import json
import os
import socket
import uuid

import httpx
import pytest

from tests.ops.browser import Browser, PinnedHost, Refused
from tests.secure.pebble import fresh_stack, purge_project
from tests.secure.pki import make_pki
from tests.stackfixture import describe_failure

pytestmark = pytest.mark.docker

PROJECT = os.environ.get("KHEOPS_USERS_TEST_PROJECT", "kusers-secured")
HTTP, HTTPS, KEYCLOAK = (int(p) for p in os.environ.get("KHEOPS_USERS_TEST_PORTS", "28280,28643,28281").split(","))
HOST = "kheops.test"
ROOT = f"https://{HOST}:{HTTPS}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    stack = fresh_stack(tmp_path_factory.mktemp("users-secured") / "kheops", PROJECT, HTTP, HTTPS, KEYCLOAK)
    pki = make_pki()
    try:
        result = stack.install()
        assert result.returncode == 0, "install failed: " + describe_failure(result)
        stack.env.pop("KHEOPS_ROOT_URL", None)  # kheops.toml holds the root URL from now on
        chain, key = pki.write(tmp_path_factory.mktemp("users-pki"), pki.leaf(HOST))
        result = stack.run("secure", "--cert", str(chain), "--key", str(key), "--root-url", ROOT, timeout=900)
        assert result.returncode == 0, "secure failed: " + describe_failure(result)
        yield stack, pki.root.pem
    finally:
        if os.environ.get("KHEOPS_KEEP_STACK") != "1":
            if stack.down(purge=True).returncode != 0:
                purge_project(PROJECT)


def test_users_on_a_secured_site_without_the_admin_console(secured, tmp_path):
    stack, ca = secured
    assert stack.settings.site.mode == "custom"
    with socket.socket() as s:  # Keycloak's port is not published any more
        assert s.connect_ex(("127.0.0.1", KEYCLOAK)) != 0
    with httpx.Client(transport=PinnedHost(HOST, ca), timeout=30) as https:
        assert https.get(f"{ROOT}/admin/").status_code in (403, 404)

    email = f"secured-{uuid.uuid4().hex[:8]}@example.org"
    password_file = tmp_path / "pw"
    password_file.write_text("secured-Password-1\n")
    password_file.chmod(0o600)
    added = stack.run("users", "add", email, "--name", "Se Cured", "--password-file", str(password_file), "--json")
    assert added.returncode == 0, added.stderr
    assert email in [u["email"] for u in json.loads(stack.run("users", "list", "--json").stdout)]

    def browser() -> Browser:
        return Browser(ROOT, "kheops", redirect_uri=f"{ROOT}/callback", transport=PinnedHost(HOST, ca))

    with browser() as b:
        tokens = b.login(email, "secured-Password-1")
    with httpx.Client(transport=PinnedHost(HOST, ca), timeout=30) as https:
        albums = https.get(f"{ROOT}/api/albums", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert albums.status_code == 200, albums.text

    assert stack.run("users", "disable", email).returncode == 0
    with browser() as b, pytest.raises(Refused, match="(?i)disabled"):
        b.login(email, "secured-Password-1")
