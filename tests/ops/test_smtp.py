"""[smtp] reconciled into the realm, proven with Keycloak 26 sending real mail to a real local SMTP server
(aiosmtpd, with authentication): the "Forgot password?" mail, the admin's password link and the verify-email
mail arrive, and their links work in Keycloak's real pages."""

from __future__ import annotations

import email
import email.policy
import queue
import re
import stat
import uuid
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy import realm_sync
from kheopsctl.errors import ConfigError, KheopsError
from kheopsctl.ops import smtp
from kheopsctl.ops.sitectx import SiteContext
from kheopsctl.ops.users import Password, UserDirectory
from tests.ops.browser import Browser, Refused
from tests.ops.conftest import write_site
from tests.services.keycloak import free_port

pytestmark = [pytest.mark.services,
              # AUTH without TLS, on loopback only: what a hospital relay without TLS does; Keycloak must cope
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")]

MAIL_USER = "kc-mailer"
SENDER = "kheops@example.org"


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    text: str
    subject: str


class Inbox:
    """aiosmtpd handler and authenticator: keeps every mail and every login it sees."""

    def __init__(self, password: str):
        self.password = password
        self.mails: queue.Queue[Mail] = queue.Queue()
        self.logins: list[tuple[str, bool]] = []

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == MAIL_USER and auth_data.password.decode() == self.password
        self.logins.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain", "html"))
        self.mails.put(Mail(envelope.mail_from, list(envelope.rcpt_tos), part.get_content(), str(message["subject"])))
        return "250 OK"

    def next(self, timeout: float = 30) -> Mail:
        return self.mails.get(timeout=timeout)


def link(mail: Mail) -> str:
    found = re.findall(r"https?://[^\s\"<>]+/login-actions/action-token\?[^\s\"<>]+", mail.text)
    assert found, f"no action link in the mail: {mail.text[:500]}"
    return found[0].replace("&amp;", "&")


@pytest.fixture(scope="module")
def inbox():
    password = "smtp-" + uuid.uuid4().hex
    box = Inbox(password)
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), authenticator=box.authenticate,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mail_site(keycloak, inbox, tmp_path_factory):
    box, port = inbox
    site = write_site(tmp_path_factory.mktemp("mail-site"), keycloak, {"smtp": {
        "host": "127.0.0.1", "port": port, "security": "none", "from_address": SENDER, "from_name": "KHEOPS test",
        "user": MAIL_USER}})
    secret = site / "secrets" / "smtp_password"
    secret.write_text(box.password + "\n")
    secret.chmod(0o644)  # reconcile tightens it, as every secret
    ctx = SiteContext.open(site)
    first = realm_sync.reconcile(ctx.settings, ctx.layout)
    yield ctx, first
    # leave the shared session realm as the other tests expect it: no mail server, no reset link
    kc = realm_sync.admin(ctx.settings, ctx.layout)
    kc.update_realm("kheops", {"smtpServer": {}, "resetPasswordAllowed": False, "verifyEmail": False})


@pytest.fixture(scope="module")
def users(mail_site) -> UserDirectory:
    return UserDirectory.connect(mail_site[0])


def new_user(users: UserDirectory, password: str) -> str:
    address = f"mail-{uuid.uuid4().hex[:8]}@example.org"
    users.add(address, "Mai Ler", Password(password, generated=False, temporary=False))
    return address


def test_reconcile_sets_the_mail_server_once_and_is_then_quiet(mail_site, inbox):
    ctx, first = mail_site
    assert any(c.startswith("realm mail server: ") for c in first), first
    assert "realm settings: resetPasswordAllowed" in first
    assert stat.S_IMODE(ctx.layout.secret("smtp_password").stat().st_mode) == 0o600
    assert realm_sync.reconcile(ctx.settings, ctx.layout) == []  # nothing differs any more
    live = realm_sync.admin(ctx.settings, ctx.layout).get_realm("kheops")
    server = live["smtpServer"]
    assert (server["host"], server["port"], server["from"], server["auth"], server["user"]) == (
        "127.0.0.1", str(inbox[1]), SENDER, "true", MAIL_USER)
    assert server.get("password") != inbox[0].password  # Keycloak never shows it back
    assert live["resetPasswordAllowed"] is True


def test_forgot_password_mail_arrives_and_its_link_sets_a_new_password(users, keycloak, inbox):
    box, _ = inbox
    address = new_user(users, "before-Reset-1")
    with Browser(keycloak.base_url) as browser:
        answer = browser.forgot_password(address)
        assert answer.status_code in (200, 302, 303)
    mail = box.next()
    assert mail.recipients == [address] and mail.sender == SENDER
    assert (MAIL_USER, True) in box.logins  # Keycloak logged in with secrets/smtp_password
    with Browser(keycloak.base_url) as other_device:  # the mail is opened elsewhere than the request was made
        other_device.open_mailed_link(link(mail), new_password="after-Reset-2")
    with Browser(keycloak.base_url) as browser, pytest.raises(Refused, match="Invalid"):
        browser.login(address, "before-Reset-1")
    with Browser(keycloak.base_url) as browser:
        assert "access_token" in browser.login(address, "after-Reset-2")


def test_admin_password_link_by_mail(users, keycloak, inbox):
    box, _ = inbox
    address = new_user(users, "before-Link-1")
    users.send_password_email(address)
    mail = box.next()
    assert mail.recipients == [address]
    with Browser(keycloak.base_url) as browser:
        browser.open_mailed_link(link(mail), new_password="after-Link-2")
    with Browser(keycloak.base_url) as browser:
        browser.login(address, "after-Link-2")
    with Browser(keycloak.base_url) as browser, pytest.raises(Refused, match="Invalid"):
        browser.login(address, "before-Link-1")


def test_verify_email_mail_verifies_the_address(users, keycloak, inbox):
    box, _ = inbox
    address = new_user(users, "verify-Me-1")
    user_id = users.get(address).id
    users.kc.update_user(user_id, {**users.kc.get_user(user_id), "emailVerified": False})
    assert users.get(address).email_verified is False
    users.kc.send_verify_email(user_id)
    mail = box.next()
    assert mail.recipients == [address]
    with Browser(keycloak.base_url) as browser:
        browser.open_mailed_link(link(mail), new_password="unused-Password-1")
    assert users.get(address).email_verified is True


def test_a_wrong_mail_password_is_a_failed_login_not_a_mail(mail_site, users, keycloak, inbox):
    box, _ = inbox
    ctx, _ = mail_site
    address = new_user(users, "wrong-Pass-1")
    secret = ctx.layout.secret("smtp_password")
    right = secret.read_text()
    secret.write_text("not-the-mail-password\n")
    try:
        realm_sync.reconcile(ctx.settings, ctx.layout)  # the password is sent again even if nothing else changed
        with pytest.raises(KheopsError, match="Keycloak refused"):
            users.send_password_email(address)
        assert (MAIL_USER, False) in box.logins and box.mails.empty()
    finally:
        secret.write_text(right)
        realm_sync.reconcile(ctx.settings, ctx.layout)
    users.send_password_email(address)
    assert box.next().recipients == [address]


# -- settings and the realm representation, without Keycloak ----------------------------------------------


def smtp_settings(**values):
    return settings_from_dict({"smtp": values})


def test_settings_checks():
    assert smtp_settings().smtp.host == ""  # mail not managed by default
    smtp_settings(host="smtp.example.org", from_address=SENDER)
    for values, key in (({"host": "smtp.example.org"}, "smtp.from_address"),
                        ({"host": "smtp.example.org", "from_address": "nobody"}, "smtp.from_address"),
                        ({"host": "smtp.example.org", "from_address": SENDER, "reply_to": "x@"}, "smtp.reply_to"),
                        ({"host": "smtp example.org", "from_address": SENDER}, "smtp.host"),
                        ({"host": "smtp.example.org", "from_address": SENDER, "port": 0}, "smtp.port"),
                        ({"security": "tls"}, "smtp.security"),
                        ({"hots": "x"}, "smtp.hots")):
        with pytest.raises(ConfigError) as err:
            smtp_settings(**values)
        assert err.value.message.startswith(key), err.value.message


def test_desired_server_and_missing_password(tmp_path):
    from kheopsctl.deploy.layout import SiteLayout

    layout = SiteLayout(tmp_path)
    s = smtp_settings(host="mail.example.org", port=465, security="ssl", from_address=SENDER, reply_to="help@example.org")
    assert smtp.desired_server(s, layout) == {
        "host": "mail.example.org", "port": "465", "from": SENDER, "fromDisplayName": "KHEOPS", "ssl": "true",
        "starttls": "false", "auth": "false", "replyTo": "help@example.org"}
    with_user = smtp_settings(host="mail.example.org", from_address=SENDER, user="u")
    with pytest.raises(KheopsError) as err:
        smtp.desired_server(with_user, layout)
    assert "smtp_password" in err.value.message and "chmod 600" in err.value.hint
