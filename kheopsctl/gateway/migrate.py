"""Versioned schema migrations: ``migrations/NNNN_name.sql`` applied in order, once each, under a lock."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import psycopg

log = logging.getLogger("kheopsctl.gateway")

# any constant: serialises concurrent gateways starting against one database
_LOCK_ID = 0x6B6865_6F7073


def available() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped, in order."""
    folder = resources.files("kheopsctl.gateway") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conn: psycopg.AsyncConnection) -> list[str]:
    """Apply the missing migrations in one transaction (all or nothing); returns the versions applied now."""
    applied_now: list[str] = []
    await conn.set_autocommit(False)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_time timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] if isinstance(row, tuple) else row["version"] for row in await cur.fetchall()}
        for version, sql in available():
            if version in done:
                continue
            async with conn.transaction():  # a savepoint: a failing migration leaves nothing behind
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("applied migration %s", version)
            applied_now.append(version)
    return applied_now


async def migrate_url(conninfo: str, wait_seconds: float = 0) -> list[str]:
    """Connect (retrying for up to ``wait_seconds`` while the DB starts) and migrate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo)
            break
        except psycopg.OperationalError:
            if loop.time() >= deadline:
                raise
            log.warning("database not reachable yet, retrying")
            await asyncio.sleep(1)
    async with conn:
        return await migrate(conn)
