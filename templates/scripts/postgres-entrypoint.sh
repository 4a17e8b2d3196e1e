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
# a cluster initialised before postgres-init.sh tightened loopback TCP: the same change, keeping the owner
hba="${PGDATA:-/var/lib/postgresql/data}/pg_hba.conf"
if [ -f "$hba" ] && grep -Eq '^host[[:space:]].*[[:space:]](127\.0\.0\.1/32|::1/128)[[:space:]]+trust' "$hba"; then
    sed -i -E 's/^(host[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+)trust[[:space:]]*$/\1scram-sha-256/' "$hba"
    chown postgres:postgres "$hba"
    chmod 0600 "$hba"
fi
exec docker-entrypoint.sh "$@"
