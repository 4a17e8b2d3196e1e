"""Who may do what in an album: the member's role there, narrowed by the capability token used.

Every decision in the gateway (REST and DICOMweb) goes through ``album_role`` + ``rights``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import psycopg

from kheopsctl.gateway.capabilities import grant_acts_as_user
from kheopsctl.gateway.errors import ApiError

if TYPE_CHECKING:
    from kheopsctl.gateway.auth import Principal


@dataclass(frozen=True)
class AlbumRole:
    album_id: str
    is_admin: bool
    is_inbox: bool
    add_user: bool
    download_series: bool
    send_series: bool
    delete_series: bool
    add_series: bool
    write_comments: bool


@dataclass(frozen=True)
class Rights:
    can_read: bool = False
    can_add_series: bool = False
    can_delete_series: bool = False
    can_send: bool = False
    can_download: bool = False
    can_add_user: bool = False
    can_comment: bool = False
    is_admin: bool = False


NO_RIGHTS = Rights()

_ROLE_SQL = (
    "SELECT a.id AS album_id, au.is_admin, a.is_inbox, a.add_user, a.download_series, a.send_series,"
    " a.delete_series, a.add_series, a.write_comments"
    " FROM album_users au JOIN albums a ON a.id = au.album_id WHERE au.user_id = %s AND au.album_id = %s"
)


async def album_role(conn: psycopg.AsyncConnection, user_id: int, album_id: str) -> AlbumRole | None:
    """The user's membership in the album (inboxes included: their owner is a non-admin member), or None."""
    cur = await conn.execute(_ROLE_SQL, (user_id, album_id))
    row = await cur.fetchone()
    if row is None:
        return None
    if not isinstance(row, dict):
        row = dict(zip([f.name for f in fields(AlbumRole)], row))
    return AlbumRole(**row)


def rights(principal: Principal, role: AlbumRole | None) -> Rights:
    """What ``principal`` may do in the album where it holds ``role``.

    Admins may do everything; the inbox uses its own flags (owner only); ordinary members get the album's six
    flags. A personal token made the KHEOPS way acts as its user: it is stored with all four permissions
    (``capabilities.acts_as_user``) and gets exactly the user's rights. Any other capability token narrows
    them: album tokens (share links, source-bound viewer tokens) reach only their album and never manage it;
    restricted personal tokens and viewer tokens keep only what their flags say: read -> see, write ->
    add/remove series (and comment), appropriate -> appropriate/send, download -> download.
    """
    if role is None:
        return NO_RIGHTS
    if role.is_admin and not role.is_inbox:
        base = Rights(True, True, True, True, True, True, True, True)
    else:
        base = Rights(
            can_read=True,
            can_add_series=role.add_series,
            can_delete_series=role.delete_series,
            can_send=role.send_series,
            can_download=role.download_series,
            can_add_user=role.add_user and not role.is_inbox,
            can_comment=role.write_comments and not role.is_inbox,
            is_admin=False,
        )
    cap = principal.capability
    if cap is None or grant_acts_as_user(cap):
        return base
    if cap.scope_type == "album" and cap.album_id != role.album_id:
        return NO_RIGHTS
    user_scope = cap.scope_type == "user"
    return Rights(
        can_read=base.can_read and cap.read,
        can_add_series=base.can_add_series and cap.write,
        can_delete_series=base.can_delete_series and cap.write,
        can_send=base.can_send and cap.appropriate,
        can_download=base.can_download and cap.download,
        can_add_user=base.can_add_user and cap.write and user_scope,
        can_comment=base.can_comment and cap.write,
        is_admin=base.is_admin and cap.write and user_scope,
    )


async def album_rights(conn: psycopg.AsyncConnection, principal: Principal, album_id: str) -> Rights:
    return rights(principal, await album_role(conn, principal.user_id, album_id))


async def readable_album_ids(conn: psycopg.AsyncConnection, principal: Principal) -> list[str]:
    """Every album (inbox included) whose series the principal may see: the base of every visibility query."""
    cap = principal.capability
    if cap is not None and not cap.read:
        return []
    if cap is not None and cap.scope_type == "album":
        role = await album_role(conn, principal.user_id, cap.album_id or "")
        return [role.album_id] if rights(principal, role).can_read else []
    cur = await conn.execute("SELECT album_id FROM album_users WHERE user_id = %s", (principal.user_id,))
    return [r["album_id"] if isinstance(r, dict) else r[0] for r in await cur.fetchall()]


def write_capable(principal: Principal, *, user_level: bool = True) -> bool:
    """Whether this credential may change state beyond series (membership, admins, favorites, album deletion,
    one's own album settings). Album rights alone do not say it: a read-only personal token carries its
    owner's admin role, and leaving as the last member deletes the album.

    Yes for the user's own OIDC token; for a capability token only with ``write`` and, for a user-level
    operation, user scope; never for a share link (an anonymous recipient) nor a viewer token.
    """
    if principal.token_kind == "oidc":
        return principal.capability is None
    if principal.token_kind != "capability":
        return False
    cap = principal.capability
    if cap is None or not cap.write or cap.study_uid is not None:
        return False
    return cap.scope_type == "user" or not user_level


def require_write_capable(principal: Principal, what: str, *, user_level: bool = True) -> None:
    """403 unless ``write_capable``; call it before anything is read or changed for the operation."""
    if not write_capable(principal, user_level=user_level):
        raise ApiError(403, f"{what} needs a user token or a personal token with write permission")


def recipient(principal: Principal) -> bool:
    """A share link or an album-scope token: someone the album was shared with, not a member. A recipient
    sees the album's studies and comments, never its members (emails) nor its audit trail."""
    cap = principal.capability
    return principal.token_kind == "link" or (cap is not None and cap.scope_type == "album")
