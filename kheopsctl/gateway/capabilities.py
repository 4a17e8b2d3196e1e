"""Capability tokens: creation (the secret is returned once and only its sha256 is stored), listing, revocation,
and the viewer tokens minted for one study.

The four ``*_permission`` columns hold what a token may *effectively* do. A personal (user-scope) token made
the KHEOPS way acts with all of its user's rights, whatever flags the client sent, so it is stored with all
four set (``acts_as_user``). A *restricted* personal token (our extension, asked for with ``restricted=true``)
keeps the flags it was given, and ``permissions.rights`` narrows the user's rights by them, as it does for
album tokens and viewer tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg

from kheopsctl.gateway import ids

_COLUMNS = (
    "c.id, c.title, c.scope_type, c.album_id, c.user_id, c.created_time, c.expiration_time, c.not_before_time,"
    " c.revoked_time, c.read_permission, c.write_permission, c.appropriate_permission, c.download_permission,"
    " c.study_uid, a.name AS album_name,"
    " u.sub AS owner_sub, CASE WHEN u.email_verified THEN u.email END AS owner_email, u.name AS owner_name,"
    " r.sub AS revoked_by_sub, CASE WHEN r.email_verified THEN r.email END AS revoked_by_email,"
    " r.name AS revoked_by_name"
)
_FROM = (" FROM capabilities c JOIN users u ON u.id = c.user_id LEFT JOIN users r ON r.id = c.revoked_by"
         " LEFT JOIN albums a ON a.id = c.album_id")

PERMISSIONS = ("read", "write", "appropriate", "download")


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


def acts_as_user(scope_type: str, study_uid: str | None, flags: Iterable[bool]) -> bool:
    """Whether a capability carries its user's full rights: a personal token with every permission, not a
    viewer token. Such a token is introspected as ``user read write downloadbutton send``."""
    return scope_type == "user" and study_uid is None and all(flags)


def row_acts_as_user(row: dict) -> bool:
    return acts_as_user(row["scope_type"], row["study_uid"], (row[f"{n}_permission"] for n in PERMISSIONS))


def grant_acts_as_user(grant) -> bool:
    """The same for an authenticated ``auth.CapabilityGrant``."""
    return acts_as_user(grant.scope_type, grant.study_uid, (getattr(grant, n) for n in PERMISSIONS))


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


async def create_viewer_token(conn: psycopg.AsyncConnection, owner_id: int, study_uid: str, *, seconds: int,
                              download: bool, source_album: str | None = None) -> tuple[dict, str]:
    """A read-only token for one study. With ``source_album`` (an album or the owner's inbox) it is stored as an
    album-scope token there, so it sees only the study's series in that source."""
    now = datetime.now(timezone.utc)
    spec = NewCapability(f"viewer {study_uid}", "album" if source_album else "user", source_album,
                         now + timedelta(seconds=seconds), now, read=True, write=False, appropriate=False,
                         download=download, study_uid=study_uid)
    row, secret = await create(conn, owner_id, spec)
    await forget_expired_viewer_tokens(conn)
    return row, secret


async def forget_expired_viewer_tokens(conn: psycopg.AsyncConnection) -> None:
    """Viewer tokens are minted at every viewer launch: drop those expired for a day (nothing refers to them)."""
    await conn.execute("DELETE FROM capabilities WHERE study_uid IS NOT NULL"
                       " AND expiration_time < now() - interval '1 day'")


async def get(conn: psycopg.AsyncConnection, cap_id: str) -> dict | None:
    cur = await conn.execute(f"SELECT {_COLUMNS}{_FROM} WHERE c.id = %s", (cap_id,))
    return await cur.fetchone()


async def list_for(conn, *, owner_id: int | None = None, album_id: str | None = None, valid: bool = False,
                   limit: int | None = None, offset: int = 0) -> tuple[list[dict], int]:
    """Tokens of an owner and/or an album, newest first. ``valid``: only those neither revoked nor expired
    (as KHEOPS: ``valid=false`` lists every token, it does not select the invalid ones). No limit: all."""
    where, params = ["c.study_uid IS NULL"], []  # viewer tokens are short-lived and not managed by hand
    if owner_id is not None:
        where.append("c.user_id = %s")
        params.append(owner_id)
    if album_id is not None:
        where.append("c.album_id = %s")
        params.append(album_id)
    if valid:
        where.append("c.revoked_time IS NULL AND c.expiration_time > now()")
    clause = " WHERE " + " AND ".join(where)
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
