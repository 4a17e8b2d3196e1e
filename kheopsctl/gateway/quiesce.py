"""Write quiescing for consistent backups: STOW holds a shared lock, ``kheopsctl backup`` takes it exclusively.

Orthanc writes an instance's file before its index commit, and the gateway indexes the instance after the
PACS answered. A dump taken while a STOW runs could hold an index row whose file is not in the storage copy,
or a gateway row for an instance the PACS dump does not have. So every STOW holds a session-level *shared*
PostgreSQL advisory lock (key :data:`WRITE_LOCK`, in the gateway's database) from its first byte to its last
index write, and the backup takes the same key *exclusively*: it waits for the STOWs in flight, and while it
holds the lock (dumps and storage copy) a new STOW is answered 503 with Retry-After at once. Reads never touch
the lock, so they keep working.

PostgreSQL queues a new shared request behind a waiting exclusive one, so a stream of uploads cannot starve
the backup. The lock lives on the database session: a gateway that dies mid-STOW releases it, and a backup
that dies releases it too, so no state survives a crash.

Each STOW borrows a connection from a small pool of its own (not the request pool: a STOW also needs a
request connection to index, and sharing one pool could deadlock under load).
"""

from __future__ import annotations

import functools
import logging

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from kheopsctl.gateway.errors import ApiError

log = logging.getLogger("kheopsctl.gateway")

# pg_advisory_lock key space is shared by everything in the database: a fixed, documented constant
# ("KHEOPSBK" read as ASCII, truncated to a signed 64-bit value)
WRITE_LOCK = 0x4B48454F5053424B
RETRY_AFTER_SECONDS = 30
POOL_MAX = 20


def _pool(app) -> AsyncConnectionPool:
    pool = getattr(app.state, "quiesce_pool", None)
    if pool is None:
        from kheopsctl.gateway.db import conninfo

        pool = AsyncConnectionPool(conninfo(app.state.settings), min_size=0, max_size=POOL_MAX, open=False,
                                   timeout=10.0, name="kheops-gateway-quiesce",
                                   kwargs={"row_factory": tuple_row, "autocommit": True})
        app.state.quiesce_pool = pool
    return pool


async def close(app) -> None:
    pool = getattr(app.state, "quiesce_pool", None)
    if pool is not None:
        await pool.close()


class WriteGuard:
    """``async with WriteGuard(app):`` holds the shared write lock, or raises ApiError 503 during a backup."""

    def __init__(self, app):
        self.app = app
        self._cm = None
        self._conn = None

    async def __aenter__(self) -> "WriteGuard":
        pool = _pool(self.app)
        if pool.closed:  # first STOW of this process; open() on an open pool is a no-op
            await pool.open(wait=False)
        self._cm = pool.connection()
        self._conn = await self._cm.__aenter__()
        try:
            row = await (await self._conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (WRITE_LOCK,))).fetchone()
        except BaseException as exc:
            await self._cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if not row[0]:
            await self._cm.__aexit__(None, None, None)
            log.info("write refused: a backup holds the write lock")
            raise ApiError(503, "a backup is running: uploads are paused, retry later",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)})
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self._conn.execute("SELECT pg_advisory_unlock_shared(%s)", (WRITE_LOCK,))
        except BaseException as failure:
            # a session that may still hold the lock never goes back to the pool: closing it releases the lock
            await _close_quietly(self._conn)
            if not isinstance(failure, Exception):
                raise  # cancellation: cleaned up, passed on
            log.warning("could not release the write lock explicitly; its session was closed instead")
        finally:
            await self._cm.__aexit__(*exc)


async def _close_quietly(conn) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - already broken: closed is what we want
        pass


def guarded(handler):
    """Decorator for a write handler ``handler(request, ctx, ...)``: runs it under :class:`WriteGuard`."""

    @functools.wraps(handler)
    async def wrapper(request, *args, **kwargs):
        async with WriteGuard(request.app):
            return await handler(request, *args, **kwargs)

    return wrapper
