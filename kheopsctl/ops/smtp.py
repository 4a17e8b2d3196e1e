"""The realm's outgoing mail: ``[smtp]`` in kheops.toml (and DIR/secrets/smtp_password) made the realm's
``smtpServer``, so Keycloak can send password-reset and verify-email mails.

With ``smtp.host`` empty kheopsctl does not manage mail: a mail server set by hand in Keycloak is kept. The
"Forgot password?" link (``resetPasswordAllowed``) is shown exactly when the realm has a mail server, since a
reset without mail cannot work. Keycloak never returns the mail password (it answers ``**********``), so it
cannot be compared: it is sent again on each reconcile, and only a change of the visible settings is reported.
"""

from __future__ import annotations

import ipaddress
import os
import stat

from kheopsctl.config import Settings, Smtp
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.secrets import read_secret
from kheopsctl.errors import ConfigError, KheopsError

PASSWORD_SECRET = "smtp_password"
SECURITY = ("starttls", "ssl", "none")


def validate_settings(smtp: Smtp) -> None:
    """Checks of the ``[smtp]`` table (called by kheopsctl.config.validate); messages start with the key path."""
    if smtp.security not in SECURITY:
        raise ConfigError(f"smtp.security: must be one of {', '.join(SECURITY)}, got {smtp.security!r}",
                          hint="starttls for port 587, ssl for port 465")
    if not smtp.host:
        return
    if any(c.isspace() or c in "/@:" for c in smtp.host) and not _is_ip(smtp.host):
        raise ConfigError(f"smtp.host: {smtp.host!r} is not a host name or address", hint="e.g. smtp.example.org")
    if not 1 <= smtp.port <= 65535:
        raise ConfigError(f"smtp.port: {smtp.port} is not a TCP port (1-65535)", hint="587 (starttls) or 465 (ssl)")
    from kheopsctl.ops.users import BadInput, check_email

    for key in ("from_address", "reply_to"):
        value = getattr(smtp, key)
        if key == "from_address" and not value:
            raise ConfigError("smtp.from_address: required when smtp.host is set",
                              hint="the sender of the realm's mails, e.g. kheops@example.org")
        if value:
            try:
                check_email(value)
            except BadInput:
                raise ConfigError(f"smtp.{key}: {value!r} is not an e-mail address") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def smtp_password(layout: SiteLayout) -> str:
    """DIR/secrets/smtp_password, tightened to 0600 like every secret; a missing one says how to add it."""
    path = layout.secret(PASSWORD_SECRET)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise KheopsError(f"smtp.user is set but {path} is missing",
                          hint=f"write the mail password to {path} (chmod 600), or leave smtp.user empty") from None
    if mode & 0o077:
        os.chmod(path, 0o600)
    value = read_secret(layout, PASSWORD_SECRET)
    if not value:
        raise KheopsError(f"{path} is empty", hint="write the mail password on its first line")
    return value


def desired_server(settings: Settings, layout: SiteLayout) -> dict[str, str]:
    """The realm's ``smtpServer`` for these settings (Keycloak wants every value as a string)."""
    s = settings.smtp
    server = {
        "host": s.host,
        "port": str(s.port),
        "from": s.from_address,
        "fromDisplayName": s.from_name,
        "ssl": _flag(s.security == "ssl"),
        "starttls": _flag(s.security == "starttls"),
        "auth": _flag(bool(s.user)),
    }
    if s.reply_to:
        server["replyTo"] = s.reply_to
    if s.user:
        server["user"] = s.user
        server["password"] = smtp_password(layout)
    return server


def _flag(value: bool) -> str:
    return "true" if value else "false"


# the keys kheopsctl manages; Keycloak may add its own (authType, debug...), which are left as they are
MANAGED = ("host", "port", "from", "fromDisplayName", "replyTo", "ssl", "starttls", "auth", "user")


def _visible(server: dict | None) -> dict:
    return {k: v for k, v in (server or {}).items() if k in MANAGED and v not in ("", None)}


def reconcile_realm(kc, realm: str, want: dict, current: dict, settings: Settings, layout: SiteLayout) -> list[str]:
    """Apply the mail settings to the live realm; returns the changes made.

    It also sets ``want["resetPasswordAllowed"]`` (the rendered realm says false) so that the caller's generic
    diff of the realm policies shows the reset link exactly when the realm can send mail.
    """
    if not settings.smtp.host:
        want["resetPasswordAllowed"] = bool((current.get("smtpServer") or {}).get("host"))
        return []
    want["resetPasswordAllowed"] = True
    server = desired_server(settings, layout)
    update: dict = {}
    changes: list[str] = []
    if _visible(server) != _visible(current.get("smtpServer")):
        changed = sorted(k for k in set(_visible(server)) | set(_visible(current.get("smtpServer")))
                         if _visible(server).get(k) != _visible(current.get("smtpServer")).get(k))
        changes.append(f"realm mail server: {', '.join(changed)}")
        update["smtpServer"] = server
    elif "password" in server:
        update["smtpServer"] = server  # the password cannot be read back: send it again, silently
    if bool(current.get("verifyEmail")) != settings.smtp.verify_email:
        update["verifyEmail"] = settings.smtp.verify_email
        changes.append(f"realm verifyEmail: {str(settings.smtp.verify_email).lower()}")
    if update:
        kc.update_realm(realm, update)
    return changes
