"""Live: the gateway's PostgreSQL database answers with the generated credentials and its schema is current.

Probed with psycopg from inside the gateway container (see ``inside.py``); when that container is down, the
connection is tried with ``psql`` inside the postgres container instead, with the same generated password.

A login only proves the secret if the server asked for it: the postgres image trusts loopback connections (its
initdb default), so the psql fallback connects to the container's network address, and both probes also try a
wrong password, which must be refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.inside import TRUSTED, WRONG_PASSWORD, ProbeUnavailable, gateway_probe
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, skip


def latest_migration() -> str:
    from kheopsctl.gateway import migrate

    return migrate.available()[-1][0]


def db_state(ctx: DoctorContext) -> dict:
    """What the database looks like from the gateway (memoised: both checks read it)."""

    def probe() -> dict:
        try:
            return {"via": "gateway", **gateway_probe(ctx)["db"]}
        except ProbeUnavailable:
            return {"via": "postgres", **psql_probe(ctx)}

    return ctx.memo("db.state", probe)


def psql_probe(ctx: DoctorContext) -> dict:
    pg = ctx.running_container("postgres")
    if pg is None:
        return {"error": "the postgres container is not running"}
    url = _gateway_database_url(ctx)
    parts = urlsplit(url)
    user, db = parts.username or "kheops", (parts.path or "/kheops").lstrip("/") or "kheops"
    host = _network_address(pg)
    if host is None:
        return {"error": "the postgres container has no network address"}
    sql = ("select current_user, current_setting('server_version'), "
           "(select string_agg(version, ',' order by version) from schema_migrations)")

    def psql(password: str):
        return pg.exec_run(["psql", "-h", host, "-U", user, "-d", db, "-XAtF", "|", "-c", sql],
                           environment={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "4"}, demux=True)

    code, (out, err) = psql(ctx.secret("kheops_authdb_pass"))
    if code != 0:
        lines = (err or b"").decode(errors="replace").strip().splitlines()
        return {"error": lines[-1][:300] if lines else f"psql exit {code}"}
    if psql(WRONG_PASSWORD)[0] == 0:
        return {"error": TRUSTED.format(user=user, where=f"{host} (inside the postgres container)"),
                "trusted": True}
    user_, version, versions = (out or b"").decode().strip().split("|")
    return {"user": user_, "server_version": version, "versions": versions.split(",") if versions else None}


def _network_address(container) -> str | None:
    """The container's address on one of its networks: not loopback, which the postgres image trusts."""
    networks = ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {})
    for net in networks.values():
        if net.get("IPAddress"):
            return net["IPAddress"]
    return None


def _gateway_database_url(ctx: DoctorContext) -> str:
    for c in ctx.project_containers().get("gateway", []):
        for item in (c.attrs.get("Config") or {}).get("Env") or []:
            if item.startswith("KHEOPS_GW_DATABASE_URL="):
                return item.split("=", 1)[1]
    return "postgresql://kheops@postgres:5432/kheops"


@check("postgres.connect", "live", "PostgreSQL accepts the gateway's generated credentials (psycopg)")
def postgres_connect(ctx: DoctorContext) -> Outcome:
    state = db_state(ctx)  # no Docker engine: the runner answers "Docker engine not reachable"
    pg = next(iter(ctx.project_containers().get("postgres", [])), None)
    if "error" in state:
        reason = state["error"]
        if pg is None or pg.status != "running":
            hint = (f"start PostgreSQL: `docker start {pg.name}`" if pg else
                    f"the postgres container is missing: run `kheopsctl install --dir {ctx.layout.dir}`")
        elif "password authentication failed" in reason:
            hint = ("the database password differs from secrets/kheops_authdb_pass; was the secret replaced "
                    "after install? restore it from a backup (the database keeps the first one)")
        elif state.get("trusted"):
            hint = (f"its pg_hba.conf trusts that connection: require scram-sha-256 there (`docker exec {pg.name} "
                    "cat /var/lib/postgresql/data/pg_hba.conf`), then `docker restart` it")
        else:
            hint = f"read `docker logs {pg.name}`; the gateway cannot work without its database"
        return fail(f"PostgreSQL not reachable (probed from the {state['via']} container): {reason}", hint,
                    via=state["via"])
    return ok(f"connected as {state['user']} (PostgreSQL {state['server_version']}, via the {state['via']} "
              "container)", via=state["via"], server_version=state["server_version"])


@check("postgres.schema", "live", "the gateway's schema version is the latest this kheopsctl ships")
def postgres_schema(ctx: DoctorContext) -> Outcome:
    state = db_state(ctx)  # no Docker engine: the runner answers "Docker engine not reachable"
    if "error" in state:
        return skip("PostgreSQL not reachable (see postgres.connect)")
    latest = latest_migration()
    versions = state.get("versions")
    if not versions:
        return fail("the gateway's schema is not installed (no schema_migrations)",
                    "the gateway migrates at start: `docker restart` its container, or run "
                    "`kheopsctl gateway migrate` inside it", latest=latest)
    current = max(versions)
    details = {"current": current, "latest": latest, "applied": versions}
    if current < latest:
        return fail(f"schema at {current}, this kheopsctl ships {latest}",
                    f"run `kheopsctl install --dir {ctx.layout.dir}` to update the gateway (it migrates at start)",
                    **details)
    if current > latest:
        return fail(f"schema at {current} is newer than this kheopsctl knows ({latest})",
                    "use the kheopsctl version that installed the site", **details)
    return ok(f"schema version {current} (latest)", **details)
