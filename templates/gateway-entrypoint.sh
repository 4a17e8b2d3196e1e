#!/bin/sh
# Docker secrets keep the host's owner and mode 0600, so the unprivileged gateway user cannot read them.
# Started as root: copy each KHEOPS_GW_*_FILE under /run/secrets to a private directory owned by that user,
# point the variable at the copy, then drop privileges for good.
set -eu
if [ "$(id -u)" = 0 ]; then
    private=/run/kheops-gateway
    mkdir -p "$private"
    chown kheops:kheops "$private"
    chmod 0700 "$private"
    for var in $(env | sed -n 's/^\(KHEOPS_GW_[A-Z_]*_FILE\)=.*/\1/p'); do
        eval "src=\${$var}"
        case "$src" in
            /run/secrets/*)
                dst="$private/$(basename "$src")"
                cp "$src" "$dst"
                chown kheops:kheops "$dst"
                chmod 0400 "$dst"
                export "$var=$dst"
                ;;
        esac
    done
    # the Unix socket's directory (a volume shared with nginx) must be writable by the unprivileged user
    if [ -n "${KHEOPS_GW_LISTEN_SOCKET:-}" ]; then
        sockdir=$(dirname "$KHEOPS_GW_LISTEN_SOCKET")
        mkdir -p "$sockdir"
        chown kheops:kheops "$sockdir"
        chmod 0755 "$sockdir"
    fi
    exec setpriv --reuid=kheops --regid=kheops --init-groups --inh-caps=-all "$@"
fi
exec "$@"
