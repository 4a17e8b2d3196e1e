"""Users: keyed by the token's ``sub``; created with their inbox on first use."""

from __future__ import annotations

import psycopg
import psycopg.errors

from kheopsctl.gateway import ids

USER_COLUMNS = "u.id, u.sub, u.email, u.name, u.inbox_id"

# an inbox's flags: addUser F, download T, send T, delete T, add T, comments F
_INBOX_INSERT = (
    "INSERT INTO albums (id, name, is_inbox, add_user, download_series, send_series, delete_series, add_series,"
    " write_comments) VALUES (%s, 'inbox', true, false, true, true, true, true, false)"
)


async def find_user(conn: psycopg.AsyncConnection, reference: str) -> dict | None:
    """The user whose sub, or else email (case-insensitive), is ``reference``."""
    cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.sub = %s", (reference,))
    row = await cur.fetchone()
    if row is None and "@" in reference:
        cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE lower(u.email) = lower(%s)", (reference,))
        row = await cur.fetchone()
    return row


async def user_by_id(conn: psycopg.AsyncConnection, user_id: int) -> dict | None:
    cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = %s", (user_id,))
    return await cur.fetchone()


async def ensure_user(conn: psycopg.AsyncConnection, sub: str, email: str | None = None, name: str | None = None) -> dict:
    """The user row for ``sub``, creating it with its inbox, or refreshing email/name when the token says otherwise."""
    cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.sub = %s", (sub,))
    row = await cur.fetchone()
    if row is not None:
        if (email and email != row["email"]) or (name and name != row["name"]):
            row = await _refresh(conn, row, email, name)
        return row
    if email and await _email_taken(conn, email):
        email = None  # another account owns this address; never merge identities on email
    try:
        await _create(conn, sub, email, name)
    except psycopg.errors.UniqueViolation:  # the address was taken by a concurrent first use
        await _create(conn, sub, None, name)
    cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.sub = %s", (sub,))
    row = await cur.fetchone()
    assert row is not None
    return row


async def _create(conn: psycopg.AsyncConnection, sub: str, email: str | None, name: str | None) -> None:
    """Insert the user and its inbox (a savepoint: a failure leaves nothing behind)."""
    async with conn.transaction():
        inbox = ids.album_id()
        await conn.execute(_INBOX_INSERT, (inbox,))
        cur = await conn.execute(
            "INSERT INTO users (sub, email, name, inbox_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (sub) DO NOTHING RETURNING id",
            (sub, email, name, inbox),
        )
        created = await cur.fetchone()
        if created is None:  # a concurrent request created this user first: drop our inbox
            await conn.execute("DELETE FROM albums WHERE id = %s", (inbox,))
        else:
            await conn.execute(
                "INSERT INTO album_users (album_id, user_id, is_admin) VALUES (%s, %s, false)", (inbox, created["id"])
            )


async def _email_taken(conn: psycopg.AsyncConnection, email: str, other_than: int | None = None) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM users WHERE lower(email) = lower(%s) AND id IS DISTINCT FROM %s", (email, other_than)
    )
    return await cur.fetchone() is not None


async def _refresh(conn: psycopg.AsyncConnection, row: dict, email: str | None, name: str | None) -> dict:
    if email and await _email_taken(conn, email, row["id"]):
        email = None
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"UPDATE users u SET email = COALESCE(%s, u.email), name = COALESCE(%s, u.name) WHERE u.id = %s"
                f" RETURNING {USER_COLUMNS}",
                (email, name, row["id"]),
            )
            updated = await cur.fetchone()
    except psycopg.errors.UniqueViolation:  # the address was just taken by another account: keep the old one
        return row
    return updated or row


def user_json(row: dict) -> dict:
    return {"sub": row["sub"], "email": row["email"], "name": row["name"]}
