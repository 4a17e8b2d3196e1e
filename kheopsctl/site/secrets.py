"""Site secrets: generated locally, one file each under DIR/secrets/ (0700 / 0600), never overwritten.

Each generated value is 32 random bytes in URL-safe base64 (no padding), so it is safe inside URLs, JSON and
shell without quoting. A secret that exists is kept byte for byte: regenerating would lock the databases out.
"""

from __future__ import annotations

import base64
import enum
import os
import secrets as _random

from kheopsctl.errors import KheopsError
from kheopsctl.site.fsutil import write_atomic
from kheopsctl.site.layout import SiteLayout


class Secret(str, enum.Enum):
    """The site's secrets by file name (a str, so a member works wherever a file name does)."""

    ADMIN_PASSWORD = "keycloak_admin_password"
    AUTHDB = "kheops_authdb_pass"
    PACSDB = "kheops_pacsdb_pass"
    KEYCLOAK_DB = "keycloak_db_pass"
    POSTGRES = "postgres_password"
    METRICS_TOKEN = "kheops_metrics_token"
    KHEOPSCTL_CLIENT = "kheops_client_kheopsctl_secret"
    # HTTP basic credentials of the embedded Orthanc (user "kheops"); only the gateway knows them
    PACS_HTTP = "kheops_pacs_http_pass"
    # the web application's confidential OIDC client kheops-web (the gateway; realm_sync sets it in Keycloak)
    WEB_CLIENT = "kheops_client_web_secret"
    # the operator's own certificate, copied by `kheopsctl secure --cert/--key`
    TLS_FULLCHAIN = "tls_fullchain.pem"
    TLS_PRIVKEY = "tls_privkey.pem"

    def __str__(self) -> str:
        return self.value


ADMIN_PASSWORD = Secret.ADMIN_PASSWORD.value
GENERATED = tuple(s.value for s in (Secret.AUTHDB, Secret.PACSDB, Secret.KEYCLOAK_DB, Secret.POSTGRES,
                                    Secret.METRICS_TOKEN, Secret.KHEOPSCTL_CLIENT, Secret.PACS_HTTP,
                                    Secret.WEB_CLIENT))
ALL = (ADMIN_PASSWORD, *GENERATED)
# Keycloak runs as its image's uid 1000 and cannot read the bind-mounted 0600 secret files (compose ignores
# uid/mode for file secrets). Compose copies a secret sourced from an environment variable into the container
# with the uid and mode asked for, so these reach Keycloak through DIR/.env (0600, same owner as secrets/),
# which compose reads for every command run in the site directory. See templates/docker-compose.yml.j2.
KEYCLOAK_SECRETS = (Secret.KEYCLOAK_DB.value, ADMIN_PASSWORD, Secret.KHEOPSCTL_CLIENT.value)
COMPOSE_ENV = ".env"


def generate() -> str:
    return base64.urlsafe_b64encode(_random.token_bytes(32)).rstrip(b"=").decode()


def ensure_secrets_dir(layout: SiteLayout) -> None:
    layout.secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.secrets_dir, 0o700)


def ensure_secret(layout: SiteLayout, name: str, value: str | None = None) -> bool:
    """Create secret ``name`` if missing (with ``value`` or a generated one). Returns True when it was created.

    An existing secret is never rewritten, only its mode is tightened to 0600.
    """
    path = layout.secret(name)
    if path.exists():
        if path.stat().st_size == 0:  # left empty by something else than us (our writes are atomic)
            raise KheopsError(f"secret {path} is empty", hint="remove it to have it generated, or fill it in")
        os.chmod(path, 0o600)
        return False
    ensure_secrets_dir(layout)
    write_atomic(path, (value if value is not None else generate()) + "\n", mode=0o600)
    return True


def ensure_all(layout: SiteLayout, admin_password: str | None) -> list[str]:
    """Create every missing secret; returns the names created (for the summary)."""
    created = []
    if ensure_secret(layout, ADMIN_PASSWORD, admin_password):
        created.append(ADMIN_PASSWORD)
    for name in GENERATED:
        if ensure_secret(layout, name):
            created.append(name)
    write_compose_env(layout)
    return created


def compose_env_var(name: str) -> str:
    """The variable of DIR/.env that holds secret ``name`` for compose."""
    return "KHEOPS_SECRET_" + str(name).upper()


def _dotenv_quote(value: str) -> str:
    # single quotes are literal in compose's .env; otherwise double quotes, escaping what they interpret
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def write_compose_env(layout: SiteLayout) -> bool:
    """(Re)write DIR/.env from secrets/ (mode 0600). Returns True when it changed."""
    lines = ["# Written by kheopsctl install from secrets/ -- do not edit: compose copies these into the",
             "# containers that cannot read the secret files (see kheopsctl/site/secrets.py)."]
    lines += [f"{compose_env_var(n)}={_dotenv_quote(read_secret(layout, n))}" for n in KEYCLOAK_SECRETS]
    return write_atomic(layout.dir / COMPOSE_ENV, "\n".join(lines) + "\n", mode=0o600)


def read_secret(layout: SiteLayout, name: str) -> str:
    path = layout.secret(name)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise KheopsError(f"secret {name} is missing ({path})",
                          hint=f"run kheopsctl install --dir {layout.dir} to create it") from None
    except PermissionError:
        raise KheopsError(f"cannot read secret {path}", hint="run kheopsctl as the user that installed the site") from None
    except UnicodeDecodeError:
        raise KheopsError(f"secret {path} is not UTF-8 text",
                          hint="secrets are one line of text; restore the original file from a backup") from None


def missing(layout: SiteLayout) -> list[str]:
    return [n for n in ALL if not layout.secret(n).exists()]
