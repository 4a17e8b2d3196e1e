"""postgres.connect proves the gateway's database secret, on the real installed stack: the postgres image trusts
loopback connections, so a login there would succeed with any password. With the gateway stopped (the psql
fallback in the postgres container), a wrong secret must be reported as a failure, and a server that accepts
any password must be reported too."""

from __future__ import annotations

import contextlib

import pytest

from kheopsctl.doctor import run_doctor

from .conftest import by_name
from .test_live import container, stopped

pytestmark = pytest.mark.docker


def connect_check(stack):
    return by_name(run_doctor(stack.settings, stack.layout, names=["postgres.connect"]).results)["postgres.connect"]


@contextlib.contextmanager
def secret_replaced(stack, name: str, value: str):
    path = stack.layout.secret(name)
    original = path.read_bytes()
    path.write_text(value + "\n")
    try:
        yield
    finally:
        path.write_bytes(original)


def test_kheops_postgres_asks_loopback_tcp_for_the_password(installed_stack):
    """The image's own default trusts loopback (tests/stack/test_images.py checks the stand-in does too);
    kheopsctl's init script asks for the password there as well, so only the socket stays trusted."""
    pg = container(installed_stack, "postgres")
    hba = pg.exec_run(["sh", "-c", 'cat "$PGDATA/pg_hba.conf"']).output.decode()
    host_lines = [line.split() for line in hba.splitlines() if line.startswith("host")]
    loopback = {(f[3], f[4]) for f in host_lines if f[3] in ("127.0.0.1/32", "::1/128")}
    assert loopback == {("127.0.0.1/32", "scram-sha-256"), ("::1/128", "scram-sha-256")}, hba
    code, out = pg.exec_run(["psql", "-h", "127.0.0.1", "-U", "kheops", "-d", "kheops", "-XAtc", "select 1"],
                            environment={"PGPASSWORD": "wrong"})
    assert code != 0 and b"password authentication failed" in out


def test_wrong_secret_fails_through_the_psql_fallback(installed_stack):
    with stopped(installed_stack, "gateway", "container.gateway", "gateway.ready"):
        assert connect_check(installed_stack).status == "ok"
        with secret_replaced(installed_stack, "kheops_authdb_pass", "not-the-database-password"):
            r = connect_check(installed_stack)
        assert r.status == "fail", r.message
        assert r.details["via"] == "postgres"
        assert "password authentication failed" in r.message
        assert "secrets/kheops_authdb_pass" in r.hint
        # a server that trusts the fallback's connection cannot prove the secret: reported, not passed
        pg = container(installed_stack, "postgres")
        hba = '"$PGDATA/pg_hba.conf"'
        assert pg.exec_run(["sh", "-c", f"cp {hba} /tmp/hba.orig && sed -i 's/scram-sha-256$/trust/' {hba}"],
                           user="postgres").exit_code == 0
        try:
            assert pg.exec_run(["sh", "-c", 'pg_ctl reload -D "$PGDATA"'], user="postgres").exit_code == 0
            with secret_replaced(installed_stack, "kheops_authdb_pass", "not-the-database-password"):
                r = connect_check(installed_stack)
            assert r.status == "fail" and "accepted a wrong password" in r.message, r.message
            assert "pg_hba.conf" in r.hint
        finally:
            pg.exec_run(["sh", "-c", f"cp /tmp/hba.orig {hba} && pg_ctl reload -D \"$PGDATA\""], user="postgres")
        assert connect_check(installed_stack).status == "ok"
