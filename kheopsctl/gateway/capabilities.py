"""Capability tokens: creation (the secret is returned once and only its sha256 is stored), listing, revocation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

from kheopsctl.gateway import ids

_COLUMNS = (
    "c.id, c.title, c.scope_type, c.album_id, c.user_id, c.created_time, c.expiration_time, c.not_before_time,"
    " c.revoked_time, c.read_permission, c.write_permission, c.appropriate_permission, c.download_permission,"
    " u.sub AS owner_sub, r.sub AS revoked_by_sub"
)
_FROM = " FROM capabilities c JOIN users u ON u.id = c.user_id LEFT JOIN users r ON r.id = c.revoked_by"


@dataclass(frozen=True)
class NewCapability:
    title: str
    scope_type: str
    album_id: str | None
    expiration_time: datetime
    not_before_time: datetime
    read: bool
    write: bool
    appropriate: bool
    download: bool
    study_uid: str | None = None  # a viewer token (read-only, this study only)


async def create(conn: psycopg.AsyncConnection, owner_id: int, spec: NewCapability) -> tuple[dict, str]:
    """Store a new capability; returns (row, secret). The secret is not kept anywhere."""
    secret = ids.capability_secret()
    cap_id = ids.capability_id()
    await conn.execute(
        "INSERT INTO capabilities (id, secret_hash, title, scope_type, album_id, user_id, expiration_time,"
        " not_before_time, read_permission, write_permission, appropriate_permission, download_permission, study_uid)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (cap_id, ids.secret_hash(secret), spec.title, spec.scope_type, spec.album_id, owner_id, spec.expiration_time,
         spec.not_before_time, spec.read, spec.write, spec.appropriate, spec.download, spec.study_uid),
    )
    row = await get(conn, cap_id)
    assert row is not None
    return row, secret


async def forget_expired_viewer_tokens(conn: psycopg.AsyncConnection) -> None:
    """Viewer tokens are minted at every viewer launch: drop those expired for a day (nothing refers to them)."""
    await conn.execute("DELETE FROM capabilities WHERE study_uid IS NOT NULL"
                       " AND expiration_time < now() - interval '1 day'")


async def get(conn: psycopg.AsyncConnection, cap_id: str) -> dict | None:
    cur = await conn.execute(f"SELECT {_COLUMNS}{_FROM} WHERE c.id = %s", (cap_id,))
    return await cur.fetchone()


async def list_for(conn, *, owner_id: int | None = None, album_id: str | None = None, valid: bool | None = None,
                   limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    where, params = ["c.study_uid IS NULL"], []  # viewer tokens are short-lived and not managed by hand
    if owner_id is not None:
        where.append("c.user_id = %s")
        params.append(owner_id)
    if album_id is not None:
        where.append("c.album_id = %s")
        params.append(album_id)
    if valid is True:
        where.append("c.revoked_time IS NULL AND c.expiration_time > now()")
    elif valid is False:
        where.append("(c.revoked_time IS NOT NULL OR c.expiration_time <= now())")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    cur = await conn.execute(f"SELECT count(*) AS n{_FROM}{clause}", params)
    total = (await cur.fetchone())["n"]
    cur = await conn.execute(
        f"SELECT {_COLUMNS}{_FROM}{clause} ORDER BY c.created_time DESC, c.id LIMIT %s OFFSET %s",
        [*params, limit, offset],
    )
    return await cur.fetchall(), total


async def revoke(conn: psycopg.AsyncConnection, cap_id: str, by_user: int) -> None:
    await conn.execute(
        "UPDATE capabilities SET revoked_time = now(), revoked_by = %s WHERE id = %s AND revoked_time IS NULL",
        (by_user, cap_id),
    )


def is_valid(row: dict, now: datetime | None = None) -> bool:
    now = now or datetime.now(timezone.utc)
    return row["revoked_time"] is None and row["not_before_time"] <= now < row["expiration_time"]
