#!/usr/bin/env bash
# Entrypoint of the kheops-test/postgres stand-in. Behaves like the official image's entrypoint: it reads
# POSTGRES_* (or their *_FILE variants) first, as root, then prepares PGDATA and re-executes itself as postgres.
# On an empty PGDATA it runs initdb, creates the user and database, runs /docker-entrypoint-initdb.d/*.sh|*.sql|
# *.sql.gz against a socket-only temporary server, then execs the server listening on all addresses.
set -Eeuo pipefail

log() { echo "$(date -u '+%F %T UTC') [entrypoint] $*" >&2; }

# file_env VAR [DEFAULT]: VAR or VAR_FILE (never both) -> exported VAR
file_env() {
  local var=$1 file_var="${1}_FILE" def=${2:-}
  if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
    log "error: both $var and $file_var are set (they are exclusive)"; exit 1
  fi
  local val=$def
  if [[ -n ${!var:-} ]]; then val=${!var}
  elif [[ -n ${!file_var:-} ]]; then val=$(< "${!file_var}")
  fi
  export "$var"="$val"
  unset "$file_var"
}

if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi

if [[ ${1:-} == postgres ]]; then
  # read the *_FILE secrets first: as root, like the official image, so 0600 root-owned secret files work
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
fi

if [[ ${1:-} == postgres && $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql && chmod 3777 /var/run/postgresql
  exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [[ ${1:-} == postgres ]]; then
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  export POSTGRES_HOST_AUTH_METHOD

  if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
      log "error: database is uninitialized and superuser password is not specified."
      log "       set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust"
      exit 1
    fi
    if [[ -n $(ls -A "$PGDATA" 2>/dev/null) ]]; then
      log "error: $PGDATA is not empty but holds no cluster (PG_VERSION missing)"; exit 1
    fi
    log "initializing a new cluster in $PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # no --auth options, like the official image: initdb's default trusts the socket AND loopback TCP
    # (127.0.0.1, ::1); only the line appended below asks the network for a password
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a word list by contract
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 -D "$PGDATA" $POSTGRES_INITDB_ARGS >/dev/null
    rm -f "$pwfile"
    printf '\n# kheops-test: accept the network, as the official image does\nhost all all all %s\n' \
      "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

    # temporary server on the unix socket only, for the init scripts
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
    export PGPASSWORD=$POSTGRES_PASSWORD PGUSER=$POSTGRES_USER PGHOST=/var/run/postgresql
    psql_base=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER")
    if [[ $POSTGRES_DB != postgres ]]; then
      "${psql_base[@]}" --dbname postgres --set db="$POSTGRES_DB" -q <<<'CREATE DATABASE :"db";'
    fi
    # for sourced init scripts, as the official image offers
    docker_process_sql() { "${psql_base[@]}" --dbname "$POSTGRES_DB" "$@"; }
    for f in /docker-entrypoint-initdb.d/*; do
      [[ -e $f ]] || continue
      case $f in
        *.sh)
          if [[ -x $f ]]; then log "running $f"; "$f"
          else log "sourcing $f"; # shellcheck disable=SC1090
            . "$f"; fi ;;
        *.sql) log "running $f"; docker_process_sql -f "$f" >/dev/null ;;
        *.sql.gz) log "running $f"; gunzip -c "$f" | docker_process_sql >/dev/null ;;
        *) log "ignoring $f" ;;
      esac
    done
    unset PGPASSWORD PGUSER PGHOST
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "PostgreSQL init process complete; ready for start up."
  else
    log "PostgreSQL database directory appears to contain a database; skipping initialization"
  fi
fi

exec "$@"
