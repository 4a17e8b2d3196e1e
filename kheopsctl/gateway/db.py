"""The gateway's PostgreSQL access: one psycopg 3 async pool per process."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kheopsctl.gateway.settings import GatewaySettings

log = logging.getLogger("kheopsctl.gateway")


def conninfo(settings: GatewaySettings) -> str:
    """The settings' URL plus the password, which is kept out of the URL (and out of logs)."""
    params = conninfo_to_dict(settings.database_url)
    if settings.database_password:
        params["password"] = settings.database_password
    params.setdefault("application_name", "kheops-gateway")
    params.setdefault("connect_timeout", "5")
    return make_conninfo(**params)


class Database:
    """Holds the pool; ``async with db.connection() as conn`` gives a dict-row connection in a transaction."""

    def __init__(self, settings: GatewaySettings):
        self.pool = AsyncConnectionPool(
            conninfo(settings),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            kwargs={"row_factory": dict_row},
            open=False,
            timeout=5.0,  # waiting for a connection longer than this means the DB is down: 503
            name="kheops-gateway",
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    def connection(self):
        return self.pool.connection()

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                async with self.pool.connection(timeout=timeout) as conn:
                    await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, TimeoutError, Exception):  # noqa: BLE001 - any failure means not ready
            return False
