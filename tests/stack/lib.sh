# Shared by tests/stack/setup-host, tests/stack/build-images and tests/run-all (sourced, not executed).
# shellcheck shell=bash

STACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$STACK_DIR/../.." && pwd)
CACHE=${KHEOPS_CACHE:-/var/cache/kheopsctl-test}
DOCKER=${DOCKER:-/usr/bin/docker}
KEYCLOAK_VERSION=26.4.7
KEYCLOAK_TGZ=$CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz
LOG_DIR=$CACHE/build-logs

# fetch_keycloak: the server distribution from Maven Central into the cache, unless already there
fetch_keycloak() {
  [[ -s $KEYCLOAK_TGZ ]] && return 0
  command -v mvn >/dev/null || { echo "error: maven (mvn) missing: run tests/stack/setup-host" >&2; return 1; }
  mkdir -p "$CACHE" "$LOG_DIR"
  echo "fetching org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz from Maven Central" >&2
  if ! mvn -q -B dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
      -DoutputDirectory="$CACHE" > "$LOG_DIR/maven.log" 2>&1 || [[ ! -s $KEYCLOAK_TGZ ]]; then
    tail -20 "$LOG_DIR/maven.log" >&2
    echo "error: maven could not fetch the Keycloak distribution (log: $LOG_DIR/maven.log)" >&2
    return 1
  fi
}

# python_for_tests: print the interpreter the suite runs with. $KHEOPS_PYTHON wins; then the repo's .venv (made
# by setup-host when the system Python is externally managed, PEP 668); then python3/python on PATH.
python_for_tests() {
  if [[ -n ${KHEOPS_PYTHON:-} ]]; then echo "$KHEOPS_PYTHON"; return; fi
  if [[ -x $REPO_DIR/.venv/bin/python ]]; then echo "$REPO_DIR/.venv/bin/python"; return; fi
  local candidate
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null; then command -v "$candidate"; return; fi
  done
  echo "python3"
}
