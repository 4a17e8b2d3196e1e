"""The pure rules behind some live checks: redirect URIs, wildcards, weak passwords, secret file modes."""

from __future__ import annotations

import os

import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.keycloak import bad_redirects, redirect_problems
from kheopsctl.doctor.posture import password_weakness, secret_modes, wildcard_uris

ROOT = "https://kheops.example.org"


@pytest.mark.parametrize("uri,problem", [
    (f"{ROOT}/*", None),
    (f"{ROOT}/", None),
    (ROOT, None),
    (f"{ROOT}/viewer/callback", None),
    ("*", "contains a wildcard"),
    ("https://*.example.org/*", "contains a wildcard"),
    (f"{ROOT}/*/x", "contains a wildcard"),
    ("https://kheops.example.org.evil.net/*", "points outside the site (https://kheops.example.org.evil.net)"),
    ("http://kheops.example.org/*", "points outside the site (http://kheops.example.org)"),
    ("https://kheops.example.org:8443/*", "points outside the site (https://kheops.example.org:8443)"),
    ("/relative/*", "is relative (resolved against the client's root URL)"),
])
def test_redirect_uri_must_be_bound_to_the_root(uri, problem):
    assert redirect_problems(uri, ROOT) == problem


def test_web_origins_are_the_site_or_plus():
    assert bad_redirects({"redirectUris": [f"{ROOT}/*"], "webOrigins": [ROOT, "+"]}, ROOT) == []
    assert bad_redirects({"webOrigins": ["*"]}, ROOT) == [f"web origin '*' is not the site ({ROOT})"]


def test_wildcards_anywhere_in_the_realm():
    assert wildcard_uris({"redirectUris": ["/realms/kheops/account/*"], "webOrigins": ["+"]}) == []
    assert wildcard_uris({"redirectUris": ["*"]}) == ["redirect URI '*'"]
    assert wildcard_uris({"redirectUris": ["http://*"]}) == ["redirect URI 'http://*'"]
    assert wildcard_uris({"redirectUris": ["/*"], "webOrigins": ["*"]}) == ["redirect URI '/*'", "web origin '*'"]


@pytest.mark.parametrize("password,status", [
    ("admin", "fail"), ("Password", "fail"), ("keycloak", "fail"), ("short1!", "fail"), ("ADMIN", "fail"),
    ("aaaaaaaaaaaaaaaa", "warn"), ("abababababababab", "warn"), ("onlylowercaseletters", None),
    ("q8f-Zr2s!pLm0xVw", None), ("Xk3Kq9zTnVfR7hWbYc2LpA", None),
])
def test_admin_password_weakness(password, status):
    weak = password_weakness(password, "admin")
    assert (weak[0] if weak else None) == status


def test_admin_password_equal_to_the_user_name_is_default():
    assert password_weakness("kheops-operator", "kheops-operator")[0] == "fail"


def test_secret_modes(tmp_path):
    layout = SiteLayout(tmp_path / "site")
    ctx = DoctorContext(settings_from_dict({}), layout)
    out = secret_modes(ctx)
    assert out.status == "fail" and "kheopsctl install" in out.hint  # no secrets directory yet
    layout.secrets_dir.mkdir(parents=True)
    os.chmod(layout.secrets_dir, 0o700)
    for name in ("a", "b"):
        layout.secret(name).write_text("x\n")
        os.chmod(layout.secret(name), 0o600)
    assert secret_modes(ctx).status == "ok"
    os.chmod(layout.secrets_dir, 0o755)
    os.chmod(layout.secret("b"), 0o640)
    out = secret_modes(ctx)
    assert out.status == "fail"
    assert "0755 (want 0700)" in out.message and "b is 0640 (want 0600)" in out.message
    assert f"chmod 700 {layout.secrets_dir}" in out.hint and f"chmod 600 {layout.secret('b')}" in out.hint
