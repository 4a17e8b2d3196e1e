#!/bin/bash
# Rendered by kheopsctl. Keycloak reads no *_FILE variables: export the secrets it needs from /run/secrets
# (copied in by compose, owned by uid 1000, mode 0400), then start the server as the image's user.
# The realm import file refers to ${KHEOPS_CLIENT_KHEOPSCTL_SECRET}; Keycloak substitutes it on import.
set -euo pipefail
# The real image has no setpriv, su or gosu: a root start could never drop privileges, so refuse it outright.
if [ "$(id -u)" = 0 ]; then
    echo "kheops: refusing to run Keycloak as root; run the container as its image's user (uid 1000)" >&2
    exit 1
fi
for f in keycloak_db_pass keycloak_admin_password kheops_client_kheopsctl_secret; do
    if [ ! -s "/run/secrets/$f" ]; then
        echo "kheops: secret $f is missing or empty; run kheopsctl install (it writes them to DIR/.env)" >&2
        exit 1
    fi
done
KC_DB_PASSWORD="$(cat /run/secrets/keycloak_db_pass)"
KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat /run/secrets/keycloak_admin_password)"
KHEOPS_CLIENT_KHEOPSCTL_SECRET="$(cat /run/secrets/kheops_client_kheopsctl_secret)"
export KC_DB_PASSWORD KC_BOOTSTRAP_ADMIN_PASSWORD KHEOPS_CLIENT_KHEOPSCTL_SECRET
exec /opt/keycloak/bin/kc.sh "$@"
