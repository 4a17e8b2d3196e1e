"""kheopsctl.ops.users against a real Keycloak 26 serving the realm kheopsctl renders, with the real gateway
trusting it: accounts created here log in through Keycloak's own login form and call the gateway."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from kheopsctl.errors import KheopsError
from kheopsctl.ops.sitectx import NoSite, SiteContext
from kheopsctl.ops.users import (BadInput, Password, UserDirectory, UserError, generate_password,
                                 password_from_file)
from tests.ops.browser import Browser, Refused
from tests.ops.conftest import write_site

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def users(kc_site) -> UserDirectory:
    return UserDirectory.connect(SiteContext.open(kc_site))


def address(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.org"


def given(value: str) -> Password:
    return Password(value, generated=False, temporary=False)


def login(keycloak, email: str, password: str, new_password: str | None = None) -> dict:
    with Browser(keycloak.base_url) as browser:
        return browser.login(email, password, new_password=new_password)


def refusal(keycloak, email: str, password: str) -> str:
    with pytest.raises(Refused) as refused:
        login(keycloak, email, password)
    return refused.value.reason


def albums(gateway: str, tokens: dict) -> httpx.Response:
    return httpx.get(gateway + "/api/albums", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                     timeout=30)


def test_added_user_logs_in_through_the_form_and_reaches_the_gateway(users, keycloak, keycloak_gateway):
    email = address("ada")
    info = users.add(email.upper(), "Ada King Lovelace", given("first-Password-1"))
    assert (info.email, info.name, info.enabled, info.email_verified) == (email, "Ada King Lovelace", True, True)
    assert info.required_actions == []
    tokens = login(keycloak, email, "first-Password-1")
    assert albums(keycloak_gateway, tokens).status_code == 200
    me = httpx.get(keycloak_gateway + "/api/users", params={"reference": email},
                   headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=30)
    assert me.status_code == 200 and me.json()["email"] == email and me.json()["name"] == "Ada King Lovelace"


def test_generated_password_is_temporary_and_must_be_changed_at_first_login(users, keycloak, keycloak_gateway):
    email = address("temp")
    password = generate_password()
    assert password.generated and password.temporary and len(password.value) >= 20
    assert password.value not in repr(password)
    info = users.add(email, "Grace Hopper", password)
    assert info.required_actions == ["UPDATE_PASSWORD"]
    assert refusal(keycloak, email, password.value) == "Keycloak asks for a new password"
    tokens = login(keycloak, email, password.value, new_password="chosen-Password-2")
    assert albums(keycloak_gateway, tokens).status_code == 200
    assert users.get(email).required_actions == []
    assert "Invalid" in refusal(keycloak, email, password.value)  # the temporary one is gone
    login(keycloak, email, "chosen-Password-2")


def test_duplicate_email_is_refused_whatever_its_case(users):
    email = address("dup")
    users.add(email, "Dup One", given("dup-Password-1"))
    for again in (email, email.upper()):
        with pytest.raises(UserError) as err:
            users.add(again, "Dup Two", given("dup-Password-2"))
        assert "already exists" in err.value.message and "reset-password" in err.value.hint
    assert [u.email for u in users.accounts()].count(email) == 1


def test_disable_refuses_login_and_ends_sessions_then_enable_restores(users, keycloak):
    email = address("dis")
    users.add(email, "Dis Abled", given("dis-Password-1"))
    tokens = login(keycloak, email, "dis-Password-1")
    assert users.set_enabled(email, False).enabled is False
    assert "disabled" in refusal(keycloak, email, "dis-Password-1").lower()
    refresh = httpx.post(f"{keycloak.issuer}/protocol/openid-connect/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "loginConnect"})
    assert refresh.status_code == 400  # its session was ended: no new access token
    assert users.set_enabled(email, True).enabled is True
    login(keycloak, email, "dis-Password-1")


def test_reset_password_old_fails_new_works(users, keycloak, keycloak_gateway):
    email = address("reset")
    users.add(email, "Re Set", given("old-Password-1"))
    tokens = login(keycloak, email, "old-Password-1")
    users.reset_password(email, given("new-Password-2"))
    assert "Invalid" in refusal(keycloak, email, "old-Password-1")
    assert albums(keycloak_gateway, login(keycloak, email, "new-Password-2")).status_code == 200
    refresh = httpx.post(f"{keycloak.issuer}/protocol/openid-connect/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "loginConnect"})
    assert refresh.status_code == 400
    temporary = generate_password()
    assert users.reset_password(email, temporary).required_actions == ["UPDATE_PASSWORD"]
    login(keycloak, email, temporary.value, new_password="third-Password-3")
    login(keycloak, email, "third-Password-3")


def test_delete_removes_the_account(users, keycloak):
    email = address("del")
    users.add(email, "De Leted", given("del-Password-1"))
    assert users.delete(email).email == email
    with pytest.raises(UserError, match="no user"):
        users.get(email)
    assert "Invalid" in refusal(keycloak, email, "del-Password-1")
    with pytest.raises(UserError, match="no user"):
        users.delete(email)


def test_list_shows_people_not_service_accounts(users):
    email = address("list")
    users.add(email, "Li St", given("list-Password-1"))
    users.set_enabled(email, False)
    listed = {u.email: u for u in users.accounts()}
    assert listed[email].enabled is False and listed[email].name == "Li St" and listed[email].created
    assert not any("service-account" in e for e in listed)


def test_unknown_user_and_invalid_email(users):
    for call in (lambda: users.set_enabled(address("ghost"), False),
                 lambda: users.reset_password(address("ghost"), given("x-Password-1")),
                 lambda: users.delete(address("ghost"))):
        with pytest.raises(UserError) as err:
            call()
        assert "no user" in err.value.message and "users list" in err.value.hint
    for bad in ("not-an-address", "a@b", "two@@example.org", "sp ace@example.org", ""):
        with pytest.raises(BadInput) as err:
            users.add(bad, None, given("x-Password-1"))
        assert err.value.exit_code == 2


def test_unreachable_keycloak_is_one_clear_error(keycloak, tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = write_site(tmp_path, keycloak)
    text = (site / "kheops.toml").read_text().replace(f"keycloak = {keycloak.base_url.rsplit(':', 1)[1]}",
                                                       f"keycloak = {port}")
    (site / "kheops.toml").write_text(text)
    with pytest.raises(UserError) as err:
        UserDirectory.connect(SiteContext.open(site), attempts=1)
    assert f"127.0.0.1:{port}" in err.value.message and "cannot be reached" in err.value.message
    assert "kheopsctl status" in err.value.hint and "\n" not in err.value.message


def test_wrong_admin_password_says_which_file(keycloak, tmp_path):
    site = write_site(tmp_path, keycloak)
    (site / "secrets" / "keycloak_admin_password").write_text("not-the-password\n")
    with pytest.raises(KheopsError, match="rejected the admin password"):
        UserDirectory.connect(SiteContext.open(site), attempts=1)


def test_no_site_in_dir(tmp_path):
    with pytest.raises(NoSite) as err:
        SiteContext.open(tmp_path)
    assert err.value.exit_code == 2 and "kheops.toml" in err.value.message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "pw"
    path.write_text("s3cret-Value\n")
    path.chmod(mode)
    with pytest.raises(BadInput) as err:
        password_from_file(path)
    assert "readable by others" in err.value.message and "chmod 600" in err.value.hint
    assert "s3cret" not in err.value.message + (err.value.hint or "")


def test_password_file_rules(tmp_path):
    path = tmp_path / "pw"
    path.write_text("s3cret Value é\n")
    path.chmod(0o600)
    got = password_from_file(path)
    assert (got.value, got.generated, got.temporary) == ("s3cret Value é", False, False)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(BadInput, match="cannot open"):
        password_from_file(link)
    with pytest.raises(BadInput, match="not a regular file"):
        password_from_file(tmp_path)
    with pytest.raises(BadInput, match="not found"):
        password_from_file(tmp_path / "missing")
    for content in ("\n", "", "two\nlines\n", "x" * 2000):
        path.write_text(content)
        with pytest.raises(BadInput):
            password_from_file(path)
