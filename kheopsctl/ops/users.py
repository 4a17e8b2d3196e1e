"""The site's user accounts, kept in its Keycloak realm and reached with the site's own admin credentials.

An account's username is its e-mail address (KHEOPS shares with people by e-mail). Keycloak is reached the way
the realm reconcile reaches it (kheopsctl.deploy.realm_sync): its published loopback port on an insecure site,
the container's address on the site's edge network on a secured one, so the admin console never has to be
exposed. Passwords are never logged; only a generated one is returned to the caller, to be shown once.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from kheopsctl.errors import KheopsError
from kheopsctl.ops.sitectx import SiteContext

# a practical address check (one @, no spaces, a dotted domain); Keycloak and the mail server judge the rest
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
MAX_PASSWORD_BYTES = 1024
# Keycloak's required action that makes a user choose a new password at the next login
UPDATE_PASSWORD = "UPDATE_PASSWORD"


class UserError(KheopsError):
    """A user operation refused by Keycloak or by our checks (exit 1)."""


class BadInput(KheopsError):
    exit_code = 2


@dataclass(frozen=True)
class Password:
    value: str
    generated: bool
    temporary: bool

    def __repr__(self) -> str:  # never in a traceback or a log line
        return f"Password(generated={self.generated}, temporary={self.temporary})"


@dataclass
class UserInfo:
    id: str
    email: str
    name: str
    enabled: bool
    email_verified: bool
    created: str
    required_actions: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def check_email(email: str) -> str:
    """The address, lowercased as Keycloak stores it; BadInput when it is not an address."""
    address = email.strip()
    if len(address) > 254 or not _EMAIL.match(address):
        raise BadInput(f"{email!r} is not a valid e-mail address", hint="give the user's address, e.g. ada@example.org")
    return address.lower()


def split_name(name: str | None) -> tuple[str, str]:
    """'Ada King Lovelace' -> ('Ada', 'King Lovelace'). Empty parts are left for Keycloak to ask at first login."""
    parts = (name or "").split()
    if not parts:
        return "", ""
    return parts[0], " ".join(parts[1:])


def generate_password() -> Password:
    # 18 random bytes, URL-safe: no character a terminal or a copy-paste mangles
    return Password(secrets.token_urlsafe(18), generated=True, temporary=True)


def password_from_file(path: Path | str, temporary: bool = False) -> Password:
    """Read a password from a file only its owner can read (or ``-`` for standard input).

    The file must be a regular file (no symlink followed), owned by us and not readable by group or others,
    like the site's own secrets. One trailing newline is dropped; the content is never echoed.
    """
    if str(path) == "-":
        raw = sys.stdin.buffer.read(MAX_PASSWORD_BYTES + 2)
        where = "standard input"
    else:
        where = str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BadInput(f"password file {where} not found", hint="check the --password-file path") from None
        except OSError as exc:
            raise BadInput(f"cannot open password file {where}: {exc.strerror}",
                           hint="give a regular file (not a symlink) that you can read") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BadInput(f"password file {where} is not a regular file", hint="write the password to a file")
            if info.st_mode & 0o077:
                raise BadInput(f"password file {where} is readable by others (mode {stat.S_IMODE(info.st_mode):04o})",
                               hint=f"chmod 600 {where}")
            if info.st_uid != os.geteuid():
                raise BadInput(f"password file {where} belongs to another user",
                               hint="use a file you own, with mode 0600")
            raw = os.read(fd, MAX_PASSWORD_BYTES + 2)
        finally:
            os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"password in {where} is not UTF-8 text", hint="write the password as plain text") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise BadInput(f"password in {where} is empty", hint="write the password on the first line")
    if len(text.encode()) > MAX_PASSWORD_BYTES or "\n" in text or "\r" in text:
        raise BadInput(f"password in {where} must be one line of at most {MAX_PASSWORD_BYTES} bytes",
                       hint="write only the password on the first line")
    return Password(text, generated=False, temporary=temporary)


def _keycloak_message(exc: Exception) -> str:
    """Keycloak's own reason (errorMessage / error_description / error), on one line, without a request echo."""
    import json

    body = getattr(exc, "response_body", b"") or b""
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            text = data.get("errorMessage") or data.get("error_description") or data.get("error") or ""
            return str(text).splitlines()[0][:200] if text else f"HTTP {getattr(exc, 'response_code', '?')}"
    except ValueError:
        pass
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


@contextmanager
def _keycloak_errors(what: str):
    """Turn python-keycloak's exceptions into one-line KheopsErrors with a hint."""
    from keycloak.exceptions import KeycloakConnectionError, KeycloakError

    try:
        yield
    except KeycloakConnectionError as exc:
        raise UserError(f"{what}: Keycloak cannot be reached ({_keycloak_message(exc)})",
                        hint="check that the site is running: kheopsctl status") from None
    except KeycloakError as exc:
        raise UserError(f"{what}: Keycloak refused: {_keycloak_message(exc)}",
                        hint="see kheopsctl logs keycloak") from None


class UserDirectory:
    """Account operations on one realm, through an authenticated python-keycloak admin client."""

    def __init__(self, kc, realm: str):
        self.kc = kc
        self.realm = realm

    @classmethod
    def connect(cls, ctx: SiteContext, attempts: int = 3) -> "UserDirectory":
        from kheopsctl.deploy import realm_sync

        client = ctx.docker if ctx.settings.secured else None  # only a secured site hides Keycloak on its network
        try:
            kc = realm_sync.admin(ctx.settings, ctx.layout, client, attempts=attempts)
        except KheopsError as exc:
            if "rejected the admin password" in exc.message:  # realm_sync's own clear message: keep it
                raise
            raise UserError(f"Keycloak of {ctx.settings.project} cannot be reached at {_admin_url(ctx, client)}",
                            hint="check that the site is running: kheopsctl status "
                                 "(then kheopsctl logs keycloak)") from None
        return cls(kc, ctx.settings.keycloak.realm)

    # -- reading ----------------------------------------------------------------------------------------------
    def accounts(self) -> list[UserInfo]:
        with _keycloak_errors("listing users"):
            reps = self.kc.get_users({})
        users = [_info(r) for r in reps if not r.get("serviceAccountClientId")
                 and not r.get("username", "").startswith("service-account-")]
        return sorted(users, key=lambda u: u.email)

    def _find_rep(self, email: str) -> dict | None:
        address = check_email(email)
        with _keycloak_errors(f"looking up {address}"):
            for query in ({"email": address, "exact": True}, {"username": address, "exact": True}):
                for rep in self.kc.get_users(query):
                    if address in ((rep.get("email") or "").lower(), (rep.get("username") or "").lower()):
                        return rep
        return None

    def get(self, email: str) -> UserInfo:
        return _info(self._require(email))

    def _require(self, email: str) -> dict:
        rep = self._find_rep(email)
        if rep is None:
            raise UserError(f"no user {check_email(email)} in realm {self.realm}",
                            hint="see kheopsctl users list for the existing accounts")
        return rep

    # -- changing ---------------------------------------------------------------------------------------------
    def add(self, email: str, name: str | None, password: Password) -> UserInfo:
        address = check_email(email)
        if self._find_rep(address) is not None:
            raise UserError(f"a user with e-mail {address} already exists in realm {self.realm}",
                            hint=f"use kheopsctl users reset-password {address} to give it a new password")
        first, last = split_name(name)
        payload = {
            "username": address, "email": address, "enabled": True,
            # the operator vouches for the address; KHEOPS shares studies by it
            "emailVerified": True,
            "credentials": [{"type": "password", "value": password.value, "temporary": password.temporary}],
            "requiredActions": [UPDATE_PASSWORD] if password.temporary else [],
        }
        if first:
            payload["firstName"] = first
        if last:
            payload["lastName"] = last
        with _keycloak_errors(f"creating {address}"):
            from keycloak.exceptions import KeycloakPostError

            try:
                self.kc.create_user(payload, exist_ok=False)
            except KeycloakPostError as exc:
                if getattr(exc, "response_code", None) == 409:  # created meanwhile, or the username is taken
                    raise UserError(f"a user with e-mail {address} already exists in realm {self.realm}",
                                    hint="see kheopsctl users list") from None
                raise
        return self.get(address)

    def set_enabled(self, email: str, enabled: bool) -> UserInfo:
        rep = self._require(email)
        with _keycloak_errors(f"{'enabling' if enabled else 'disabling'} {rep.get('email')}"):
            self.kc.update_user(rep["id"], {**_writable(rep), "enabled": enabled})
            if not enabled:
                self.kc.user_logout(rep["id"])  # end its sessions: no new token from a refresh
        return self.get(email)

    def reset_password(self, email: str, password: Password) -> UserInfo:
        rep = self._require(email)
        with _keycloak_errors(f"setting the password of {rep.get('email')}"):
            self.kc.set_user_password(rep["id"], password.value, temporary=password.temporary)
            self.kc.user_logout(rep["id"])  # whoever knew the old password loses its sessions too
        return self.get(email)

    def send_password_email(self, email: str, lifespan_seconds: int = 43200) -> UserInfo:
        """Mail the user a link to choose a new password (needs the realm's SMTP settings, see ops.smtp)."""
        rep = self._require(email)
        with _keycloak_errors(f"checking the mail settings of realm {self.realm}"):
            smtp = self.kc.get_realm(self.realm).get("smtpServer") or {}
        if not smtp.get("host"):
            raise UserError(f"realm {self.realm} has no mail server, so no reset mail can be sent",
                            hint="fill in [smtp] in kheops.toml and run kheopsctl install, or give a password")
        with _keycloak_errors(f"sending a password mail to {rep.get('email')}"):
            self.kc.send_update_account(rep["id"], [UPDATE_PASSWORD], lifespan=lifespan_seconds)
        return self.get(email)

    def delete(self, email: str) -> UserInfo:
        rep = self._require(email)
        info = _info(rep)
        with _keycloak_errors(f"deleting {info.email}"):
            self.kc.delete_user(rep["id"])
        return info


def _admin_url(ctx: SiteContext, client) -> str:
    from kheopsctl.deploy.realm_sync import keycloak_admin_url

    try:
        return keycloak_admin_url(ctx.settings, client)
    except KheopsError:
        return "its container (not found)"


# the parts of a user representation a PUT may carry back (Keycloak 24+ drops attributes a PUT omits)
_WRITABLE = ("username", "email", "firstName", "lastName", "enabled", "emailVerified", "attributes",
             "requiredActions")


def _writable(rep: dict) -> dict:
    return {k: rep[k] for k in _WRITABLE if k in rep}


def _info(rep: dict) -> UserInfo:
    created = rep.get("createdTimestamp")
    return UserInfo(
        id=rep["id"],
        email=(rep.get("email") or rep.get("username") or "").lower(),
        name=" ".join(p for p in (rep.get("firstName"), rep.get("lastName")) if p),
        enabled=bool(rep.get("enabled")),
        email_verified=bool(rep.get("emailVerified")),
        created=datetime.fromtimestamp(created / 1000, timezone.utc).isoformat(timespec="seconds") if created else "",
        required_actions=list(rep.get("requiredActions") or []),
    )
