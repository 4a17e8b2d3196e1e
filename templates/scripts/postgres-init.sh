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
