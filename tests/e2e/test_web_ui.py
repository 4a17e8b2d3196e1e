"""The web application on an installed site (``installed_stack``): Chromium opens http://127.0.0.1:<port>/,
logs in through the site's own Keycloak login page, sees the inbox and the account menu, and logs out.
Run it on its own project and ports (tests/stackfixture.py), e.g.
``KHEOPS_PROJECT=kheops-webui KHEOPS_PORTS__HTTP=18480 KHEOPS_PORTS__HTTPS=18443 KHEOPS_PORTS__KEYCLOAK=18481``.
Screenshots go to ``KHEOPS_TEST_ARTEFACTS`` (default: a tmp dir, printed)."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest

from tests.oidc_login import create_user

pytestmark = pytest.mark.docker
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def test_a_user_logs_in_on_the_installed_site_and_out_again(installed_stack):
    from playwright.sync_api import sync_playwright

    stack = installed_stack
    settings = stack.settings
    artefacts = Path(os.environ.get("KHEOPS_TEST_ARTEFACTS") or tempfile.mkdtemp(prefix="kheops-ui-stack-"))
    artefacts.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {artefacts}")
    password = secrets.token_urlsafe(12)
    create_user(stack.keycloak_url, stack.admin_password, settings.keycloak.realm, "webui-alice", password,
                admin_user=settings.keycloak.admin_user)
    root = stack.http_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            reply = page.goto(root + "/")
            assert reply.status == 200 and "frame-ancestors 'none'" in reply.headers["content-security-policy"]
            page.click("#login")
            page.wait_for_selector("#username")
            assert page.url.startswith(settings.issuer + "/protocol/openid-connect/auth")
            page.fill("#username", "webui-alice")
            page.fill("#password", password)
            page.click("#kc-login")
            page.wait_for_url(root + "/")
            page.wait_for_selector("#account-menu")
            assert page.text_content("#account-email") == "webui-alice@example.org"
            page.wait_for_selector("#status:text('No study matches.')")  # the inbox asked /api: empty, no error
            page.screenshot(path=str(artefacts / "stack-inbox.png"))
            page.click("#account-menu summary")
            page.click("#logout")
            page.wait_for_url(root + "/")
            page.wait_for_selector("#login")
            page.goto(root + "/albums")
            assert page.locator("#login").count() == 1  # the session is gone
        finally:
            browser.close()
