"""Kept for old import paths (kheopsctl.ops.sitectx, tests): the secrets live in kheopsctl.site.secrets."""

from kheopsctl.site.secrets import (ADMIN_PASSWORD, ALL, COMPOSE_ENV, GENERATED, KEYCLOAK_SECRETS, Secret,
                                    compose_env_var, ensure_all, ensure_secret, ensure_secrets_dir, generate,
                                    missing, read_secret, write_compose_env)

__all__ = ["ADMIN_PASSWORD", "ALL", "COMPOSE_ENV", "GENERATED", "KEYCLOAK_SECRETS", "Secret", "compose_env_var",
           "ensure_all", "ensure_secret", "ensure_secrets_dir", "generate", "missing", "read_secret",
           "write_compose_env"]
