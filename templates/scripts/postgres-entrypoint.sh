#!/bin/sh
# Rendered by kheopsctl. Runs as root before the image's entrypoint: reads the role passwords that the
# init script needs from /run/secrets (the postgres user cannot read those 0600 files), then hands over.
set -eu
# the superuser password too: the image may read *_FILE only after dropping to the postgres user
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
    export POSTGRES_PASSWORD
    unset POSTGRES_PASSWORD_FILE
fi
KHEOPS_AUTHDB_PASSWORD="$(cat /run/secrets/kheops_authdb_pass)"
KHEOPS_PACSDB_PASSWORD="$(cat /run/secrets/kheops_pacsdb_pass)"
KEYCLOAK_DB_PASSWORD="$(cat /run/secrets/keycloak_db_pass)"
export KHEOPS_AUTHDB_PASSWORD KHEOPS_PACSDB_PASSWORD KEYCLOAK_DB_PASSWORD
exec docker-entrypoint.sh "$@"
