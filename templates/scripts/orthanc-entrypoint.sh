#!/bin/sh
# Rendered by kheopsctl. Orthanc expands ${VARS} in its JSON configuration: export the passwords from
# /run/secrets so the configuration file itself holds none.
set -eu
KHEOPS_PACSDB_PASSWORD="$(cat /run/secrets/kheops_pacsdb_pass)"
KHEOPS_PACS_HTTP_PASSWORD="$(cat /run/secrets/kheops_pacs_http_pass)"
export KHEOPS_PACSDB_PASSWORD KHEOPS_PACS_HTTP_PASSWORD
exec Orthanc "$@"
