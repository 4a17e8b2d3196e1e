"""Users: keyed by the token's ``sub``; created with their inbox on first use.

An email counts only when the OIDC provider marked it verified (``email_verified``). An unverified address is
stored (the next verified token may confirm it) but is never matched by a lookup, never shown to anyone and
never sent out (webhooks): otherwise whoever can claim an address at the provider would receive what is
shared to it, or pass for its owner.
"""

from __future__ import annotations

import psycopg
import psycopg.errors

from kheopsctl.gateway import ids

# what the rest of the gateway sees of a user: the email only when verified
USER_COLUMNS = "u.id, u.sub, CASE WHEN u.email_verified THEN u.email END AS email, u.name, u.inbox_id"
# plus what provisioning compares with the token
_OWN_COLUMNS = USER_COLUMNS + ", u.email AS stored_email, u.email_verified"

# an inbox's flags: addUser F, download T, send T, delete T, add T, comments F
_INBOX_INSERT = (
    "INSERT INTO albums (id, name, is_inbox, add_user, download_series, send_series, delete_series, add_series,"
    " write_comments) VALUES (%s, 'inbox', true, false, true, true, true, true, false)"
)


async def find_user(conn: psycopg.AsyncConnection, reference: str) -> dict | None:
    """The user whose sub, or else verified email (case-insensitive), is exactly ``reference``."""
    cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.sub = %s", (reference,))
    row = await cur.fetchone()
    if row is None and "@" in reference:
        cur = await conn.execute(
            f"SELECT {USER_COLUMNS} FROM users u WHERE u.email_verified AND lower(u.email) = lower(%s)", (reference,))
        row = await cur.fetchone()
    return row


async def user_by_id(conn: psycopg.AsyncConnection, user_id: int) -> dict | None:
    cur = await conn.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = %s", (user_id,))
    return await cur.fetchone()


async def ensure_user(conn: psycopg.AsyncConnection, sub: str, email: str | None = None, name: str | None = None,
                      email_verified: bool = False) -> dict:
    """The user row for ``sub``, creating it with its inbox, or refreshing email/name when the token says
    otherwise. ``email_verified`` is the provider's word on ``email``; without it the address is inert."""
    cur = await conn.execute(f"SELECT {_OWN_COLUMNS} FROM users u WHERE u.sub = %s", (sub,))
    row = await cur.fetchone()
    if row is not None:
        if (email and (email != row["stored_email"] or email_verified != row["email_verified"])) or (
                name and name != row["name"]):
            row = await _refresh(conn, row, email, email_verified, name)
        return row
    if email and email_verified and await _email_taken(conn, email):
        email = None  # another account owns this verified address; never merge identities on email
    try:
        await _create(conn, sub, email, email_verified, name)
    except psycopg.errors.UniqueViolation:  # the address was taken by a concurrent first use
        await _create(conn, sub, None, False, name)
    cur = await conn.execute(f"SELECT {_OWN_COLUMNS} FROM users u WHERE u.sub = %s", (sub,))
    row = await cur.fetchone()
    assert row is not None
    return row


async def _create(conn: psycopg.AsyncConnection, sub: str, email: str | None, email_verified: bool,
                  name: str | None) -> None:
    """Insert the user and its inbox (a savepoint: a failure leaves nothing behind)."""
    async with conn.transaction():
        inbox = ids.album_id()
        await conn.execute(_INBOX_INSERT, (inbox,))
        cur = await conn.execute(
            "INSERT INTO users (sub, email, email_verified, name, inbox_id) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (sub) DO NOTHING RETURNING id",
            (sub, email, bool(email and email_verified), name, inbox),
        )
        created = await cur.fetchone()
        if created is None:  # a concurrent request created this user first: drop our inbox
            await conn.execute("DELETE FROM albums WHERE id = %s", (inbox,))
        else:
            await conn.execute(
                "INSERT INTO album_users (album_id, user_id, is_admin) VALUES (%s, %s, false)", (inbox, created["id"])
            )


async def _email_taken(conn: psycopg.AsyncConnection, email: str, other_than: int | None = None) -> bool:
    """Whether another account holds ``email`` verified (unverified claims block nobody)."""
    cur = await conn.execute(
        "SELECT 1 FROM users WHERE email_verified AND lower(email) = lower(%s) AND id IS DISTINCT FROM %s",
        (email, other_than),
    )
    return await cur.fetchone() is not None


async def _refresh(conn: psycopg.AsyncConnection, row: dict, email: str | None, email_verified: bool,
                   name: str | None) -> dict:
    if email and email_verified and await _email_taken(conn, email, row["id"]):
        email = None  # keep what we had rather than take over another account's address
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE users u SET email = COALESCE(%(email)s, u.email),"
                " email_verified = CASE WHEN %(email)s::text IS NULL THEN u.email_verified ELSE %(verified)s END,"
                f" name = COALESCE(%(name)s, u.name) WHERE u.id = %(id)s RETURNING {_OWN_COLUMNS}",
                {"email": email, "verified": email_verified, "name": name, "id": row["id"]},
            )
            updated = await cur.fetchone()
    except psycopg.errors.UniqueViolation:  # the address was just verified by another account: keep the old one
        return row
    return updated or row


def user_json(row: dict) -> dict:
    """A user as others see it (``row`` from ``USER_COLUMNS``: the email only when verified)."""
    return {"sub": row["sub"], "email": row["email"], "name": row["name"]}
