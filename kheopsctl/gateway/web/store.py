"""The SQL of the web sessions (table ``web_sessions``, migration 0009)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone


def cookie_hash(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


async def create(conn, cookie: str, sub: str, csrf: str, sealed: bytes, access_expires: float,
                 expires: float) -> None:
    await conn.execute("DELETE FROM web_sessions WHERE expires < now()")  # housekeeping, once per login
    await conn.execute(
        "INSERT INTO web_sessions (id_hash, user_sub, csrf, tokens, access_expires, expires)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (cookie_hash(cookie), sub, csrf, sealed, _ts(access_expires), _ts(expires)))


async def find(conn, cookie: str, *, lock: bool = False) -> dict | None:
    sql = ("SELECT id_hash, user_sub, csrf, tokens, access_expires, expires FROM web_sessions"
           " WHERE id_hash = %s AND expires > now()")
    cur = await conn.execute(sql + (" FOR UPDATE" if lock else ""), (cookie_hash(cookie),))
    return await cur.fetchone()


async def update_tokens(conn, cookie: str, sealed: bytes, access_expires: float, expires: float) -> None:
    await conn.execute(
        "UPDATE web_sessions SET tokens = %s, access_expires = %s, expires = %s, refreshed = now()"
        " WHERE id_hash = %s", (sealed, _ts(access_expires), _ts(expires), cookie_hash(cookie)))


async def delete(conn, cookie: str) -> dict | None:
    cur = await conn.execute("DELETE FROM web_sessions WHERE id_hash = %s RETURNING tokens",
                             (cookie_hash(cookie),))
    return await cur.fetchone()
