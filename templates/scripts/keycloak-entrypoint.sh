#!/bin/bash
# Rendered by kheopsctl. Keycloak reads no *_FILE variables: export the secrets it needs from /run/secrets,
# then drop from root to the image's user (uid 1000) before starting the server.
# The realm import file refers to ${KHEOPS_CLIENT_KHEOPSCTL_SECRET}; Keycloak substitutes it on import.
set -euo pipefail
KC_DB_PASSWORD="$(cat /run/secrets/keycloak_db_pass)"
KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat /run/secrets/keycloak_admin_password)"
KHEOPS_CLIENT_KHEOPSCTL_SECRET="$(cat /run/secrets/kheops_client_kheopsctl_secret)"
export KC_DB_PASSWORD KC_BOOTSTRAP_ADMIN_PASSWORD KHEOPS_CLIENT_KHEOPSCTL_SECRET
KC=/opt/keycloak/bin/kc.sh
if [ "$(id -u)" = 0 ]; then
    export HOME=/opt/keycloak
    if command -v setpriv >/dev/null 2>&1; then
        exec setpriv --reuid=1000 --regid=0 --clear-groups "$KC" "$@"
    fi
    echo "kheops: setpriv not found, Keycloak runs as root" >&2
fi
exec "$KC" "$@"
