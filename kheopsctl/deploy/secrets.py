"""Site secrets: generated locally, one file each under DIR/secrets/ (0700 / 0600), never overwritten.

Each generated value is 32 random bytes in URL-safe base64 (no padding), so it is safe inside URLs, JSON and
shell without quoting. A secret that exists is kept byte for byte: regenerating would lock the databases out.
"""

from __future__ import annotations

import base64
import os
import secrets as _random

from kheopsctl.deploy.fsutil import write_atomic
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.errors import KheopsError

ADMIN_PASSWORD = "keycloak_admin_password"
GENERATED = (
    "kheops_authdb_pass",
    "kheops_pacsdb_pass",
    "keycloak_db_pass",
    "postgres_password",
    "kheops_metrics_token",
    "kheops_client_kheopsctl_secret",
    # HTTP basic credentials of the embedded Orthanc (user "kheops"); only the gateway knows them
    "kheops_pacs_http_pass",
)
ALL = (ADMIN_PASSWORD, *GENERATED)
# Keycloak runs as its image's uid 1000 and cannot read the bind-mounted 0600 secret files (compose ignores
# uid/mode for file secrets). Compose copies a secret sourced from an environment variable into the container
# with the uid and mode asked for, so these reach Keycloak through DIR/.env (0600, same owner as secrets/),
# which compose reads for every command run in the site directory. See templates/docker-compose.yml.j2.
KEYCLOAK_SECRETS = ("keycloak_db_pass", ADMIN_PASSWORD, "kheops_client_kheopsctl_secret")
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
    return "KHEOPS_SECRET_" + name.upper()


def _dotenv_quote(value: str) -> str:
    # single quotes are literal in compose's .env; otherwise double quotes, escaping what they interpret
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def write_compose_env(layout: SiteLayout) -> bool:
    """(Re)write DIR/.env from secrets/ (mode 0600). Returns True when it changed."""
    lines = ["# Written by kheopsctl install from secrets/ -- do not edit: compose copies these into the",
             "# containers that cannot read the secret files (see kheopsctl/deploy/secrets.py)."]
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


def missing(layout: SiteLayout) -> list[str]:
    return [n for n in ALL if not layout.secret(n).exists()]


