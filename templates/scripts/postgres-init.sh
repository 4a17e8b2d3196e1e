#!/bin/sh
# Rendered by kheopsctl. Runs once, when the data directory is first initialised: one database and one
# owner role each for the gateway, Orthanc's index and Keycloak. Passwords come from the environment that
# postgres-entrypoint.sh exported (never from this file).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v authdb_pass="$KHEOPS_AUTHDB_PASSWORD" \
     -v pacsdb_pass="$KHEOPS_PACSDB_PASSWORD" \
     -v keycloak_pass="$KEYCLOAK_DB_PASSWORD" <<'SQL'
CREATE ROLE kheops LOGIN PASSWORD :'authdb_pass';
CREATE DATABASE kheops OWNER kheops;
CREATE ROLE orthanc LOGIN PASSWORD :'pacsdb_pass';
CREATE DATABASE orthanc OWNER orthanc;
CREATE ROLE keycloak LOGIN PASSWORD :'keycloak_pass';
CREATE DATABASE keycloak OWNER keycloak;
REVOKE ALL ON DATABASE kheops, orthanc, keycloak FROM PUBLIC;
SQL
# The image's initdb trusts every loopback connection (only the network gets scram-sha-256): ask for the
# password on loopback TCP too, so a login over 127.0.0.1 proves the secret. The socket stays trusted for
# the image's own init steps; the health check (pg_isready) does not log in.
sed -i -E 's/^(host[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+)trust[[:space:]]*$/\1scram-sha-256/' \
    "$PGDATA/pg_hba.conf"
