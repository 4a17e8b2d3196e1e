"""Migrations: applied once, in order, safely when several gateways start together against one database."""

from __future__ import annotations

import asyncio

import psycopg

from kheopsctl.gateway.migrate import available, migrate_url


def test_concurrent_starts_apply_each_migration_once(pg, unique):
    name = f"concurrent_{unique.replace('-', '_')}"
    pg.service.create_database(name)
    conninfo = pg.service.conninfo.replace("dbname=kheops", f"dbname={name}")
    try:
        async def three_at_once():
            return await asyncio.gather(*(migrate_url(conninfo) for _ in range(3)))

        results = asyncio.run(three_at_once())
        shipped = [version for version, _ in available()]
        assert sorted(results, key=len) == [[], [], shipped]  # one of them did the work, the others waited
        with psycopg.connect(conninfo) as conn:
            assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == shipped
        assert asyncio.run(migrate_url(conninfo)) == []
    finally:
        pg.service.drop_database(name)


def test_a_failing_migration_leaves_nothing(pg, unique, monkeypatch):
    import kheopsctl.gateway.migrate as migrate_module

    name = f"failing_{unique.replace('-', '_')}"
    pg.service.create_database(name)
    conninfo = pg.service.conninfo.replace("dbname=kheops", f"dbname={name}")
    broken = [*available(), ("9999_broken", "CREATE TABLE half_done (id int); SELECT no_such_function();")]
    monkeypatch.setattr(migrate_module, "available", lambda: broken)
    try:
        try:
            asyncio.run(migrate_url(conninfo))
            raise AssertionError("the broken migration did not fail")
        except psycopg.errors.UndefinedFunction:
            pass
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT to_regclass('half_done'), to_regclass('albums')").fetchone() == (None, None)
    finally:
        pg.service.drop_database(name)
