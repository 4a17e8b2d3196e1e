"""`kheopsctl users` on a real installed site (the shared test stack of tests/stackfixture.py): the console
script, the site's own admin secret, Keycloak in its container, login through Keycloak's form, the gateway
behind nginx."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.ops.browser import Browser, Refused

pytestmark = pytest.mark.docker


def test_users_lifecycle_on_the_installed_site(installed_stack, tmp_path):
    stack = installed_stack
    s = stack.settings
    email = f"stack-{uuid.uuid4().hex[:8]}@example.org"
    password_file = tmp_path / "pw"
    password_file.write_text("stack-Password-1\n")
    password_file.chmod(0o600)

    def browser() -> Browser:
        return Browser(stack.keycloak_url, s.keycloak.realm, redirect_uri=f"{s.root_url}/callback")

    added = stack.run("users", "add", email, "--name", "Sta Ck", "--password-file", str(password_file), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["email"] == email and "stack-Password-1" not in added.stdout + added.stderr

    with browser() as b:
        tokens = b.login(email, "stack-Password-1")
    albums = httpx.get(f"{stack.http_url}/api/albums", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                       timeout=30)
    assert albums.status_code == 200 and albums.headers["server"].startswith("nginx"), albums.text

    listed = stack.run("users", "list", "--json")
    assert listed.returncode == 0 and email in [u["email"] for u in json.loads(listed.stdout)]

    assert stack.run("users", "disable", email).returncode == 0
    with browser() as b, pytest.raises(Refused, match="(?i)disabled"):
        b.login(email, "stack-Password-1")
    assert stack.run("users", "enable", email).returncode == 0

    reset = stack.run("users", "reset-password", email, "--json")  # a generated temporary password
    assert reset.returncode == 0, reset.stderr
    temporary = json.loads(reset.stdout)["temporary_password"]
    assert reset.stderr.count(temporary) == 1
    with browser() as b, pytest.raises(Refused, match="Invalid"):
        b.login(email, "stack-Password-1")
    with browser() as b:
        tokens = b.login(email, temporary, new_password="stack-Password-2")
    assert httpx.get(f"{stack.http_url}/api/albums", timeout=30,
                     headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200

    duplicate = stack.run("users", "add", email)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    assert stack.run("users", "delete", email, "--yes").returncode == 0
    gone = stack.run("users", "disable", email)
    assert gone.returncode == 1 and f"no user {email}" in gone.stderr


def test_install_summary_ends_with_the_first_user_hint(installed_stack):
    again = installed_stack.install()  # a re-run with nothing changed restarts nothing
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith("create your first user: kheopsctl users add ")
