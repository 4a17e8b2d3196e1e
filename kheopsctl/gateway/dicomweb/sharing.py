"""Appropriate, share (to an album or a user's inbox), remove and favorite, per study or series.

Rules (reference): the source needs sendSeries (``?album=``, ``?inbox=true``, or else any album the caller sees
the series in), the target album needs addSeries, removal needs deleteSeries in that album (the inbox: always
its owner). Unknown or invisible studies/series answer 404; visible without the right answers 403. Decisions
are made on fresh data (no cache) and every change is recorded as an event.

An album token (a share link included) works inside its album, as KHEOPS: its source is its album, "appropriate"
(no target) adds to that album (with write), and removal without an album removes from it. It never shares to
a user. With ``X-Authorization-Source`` (``auth.authorization_source``) the source is that share link's album
and what it lets its holder send, the target is the caller's inbox or an album where the caller may add, and
the caller must be a user acting with a write-capable credential.
"""

from __future__ import annotations

from kheopsctl.gateway import events, webhooks
from kheopsctl.gateway.api.forms import boolean
from kheopsctl.gateway.dicomweb.access import StudyAccess, study_access
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_rights, require_write_capable
from kheopsctl.gateway.users import find_user


def _targets(access: StudyAccess, series_uid: str | None, source_album: str | None) -> list[str]:
    """Visible series in scope (404 when none)."""
    if series_uid is not None:
        found = [series_uid] if series_uid in access.series else []
    else:
        found = list(access.series)
    if source_album is not None:
        found = [s for s in found if source_album in access.series[s].albums]
    if not found:
        raise ApiError(404, "not found")
    return found


def _sendable(access: StudyAccess, series: list[str], source_album: str | None) -> list[str]:
    ok = []
    for s in series:
        a = access.series[s]
        r = [a.albums[source_album]] if source_album else list(a.albums.values())
        if any(x.can_send for x in r):
            ok.append(s)
    if not ok:
        raise ApiError(403, "no right to send these series from here")
    return ok


async def _add(conn, principal, target_album: str, study_uid: str, series: list[str], series_level: bool,
               target_user_id: int | None = None) -> int:
    added = 0
    new: list[str] = []
    for s in series:
        cur = await conn.execute("INSERT INTO album_series (album_id, series_uid) VALUES (%s, %s)"
                                 " ON CONFLICT DO NOTHING RETURNING series_uid", (target_album, s))
        if await cur.fetchone() is not None:
            added += 1
            new.append(s)
            if series_level:
                await events.record(conn, album_id=target_album, principal=principal, mutation_type="IMPORT_SERIES",
                                    study_uid=study_uid, series_uid=s, target_user_id=target_user_id)
    if added and not series_level:
        await events.record(conn, album_id=target_album, principal=principal, mutation_type="IMPORT_STUDY",
                            study_uid=study_uid, target_user_id=target_user_id, series_uids=new)
    if new:
        await webhooks.enqueue(conn, target_album, "new_series", {"study": study_uid, "series": new,
                                                                  **webhooks.source(principal)})
    return added


def inbox_flag(query) -> bool:
    """``?inbox=true``: the source is the caller's inbox (KHEOPS's parameter)."""
    return bool(boolean(query, "inbox", False))


def _source(principal, source_album: str | None, from_inbox: bool, via) -> tuple[object, str | None]:
    """(whose rights read the source, the source album or None for "any"), 400 on contradictory parameters."""
    if source_album and from_inbox:
        raise ApiError(400, "give album or inbox=true, not both")
    if via is not None:  # X-Authorization-Source: the share link's album, read with the link's rights
        require_write_capable(principal, "importing from a share link")
        link_album = via.capability.album_id
        if from_inbox or source_album not in (None, link_album):
            raise ApiError(400, "with X-Authorization-Source the source is the link's album")
        return via, link_album
    cap = principal.capability
    if cap is not None and cap.scope_type == "album":
        if from_inbox:
            raise ApiError(400, "with an album token the source is its album: give neither album nor inbox")
        if source_album not in (None, cap.album_id):  # KHEOPS: 400; an album it cannot see is simply not found
            raise ApiError(404, "album not found")
        return principal, cap.album_id
    return principal, principal.inbox_id if from_inbox else source_album


async def share(conn, principal, study_uid: str, series_uid: str | None, *, source_album: str | None,
                from_inbox: bool = False, target_album: str | None = None, target_user: str | None = None,
                via=None) -> int:
    """Copy visible, sendable series into an album, a user's inbox, or (neither given) the caller's inbox
    (an album token: its album). ``via``: the principal of an X-Authorization-Source share link."""
    cap = principal.capability
    album_token = cap is not None and cap.scope_type == "album"
    reader, source_album = _source(principal, source_album, from_inbox, via)
    async with conn.transaction():
        access = await study_access(conn, reader, study_uid)
        series = _sendable(access, _targets(access, series_uid, source_album), source_album)
        target_user_id = None
        if target_user is not None:
            if album_token:
                raise ApiError(403, "an album token cannot share with users")
            user = await find_user(conn, target_user)
            if user is None:
                raise ApiError(404, "user not found")
            target, target_user_id = user["inbox_id"], user["id"]
        elif target_album is not None:
            r = await album_rights(conn, principal, target_album)
            if not r.can_read:
                raise ApiError(404, "album not found")
            if not r.can_add_series:
                raise ApiError(403, "no right to add series to this album")
            target = target_album
        elif album_token:  # "appropriate" with an album token: into its own album
            if not (await album_rights(conn, principal, cap.album_id)).can_add_series:
                raise ApiError(403, "this token cannot add series to its album")
            target = cap.album_id
        else:  # appropriate: into the caller's own inbox
            target = principal.inbox_id
        return await _add(conn, principal, target, study_uid, series, series_uid is not None, target_user_id)


async def remove(conn, principal, study_uid: str, series_uid: str | None, album: str | None) -> int:
    """Remove the series from ``album`` (default: the caller's inbox, or an album token's album); the PACS
    keeps the images."""
    cap = principal.capability
    album = album or (cap.album_id if cap is not None and cap.scope_type == "album" else principal.inbox_id)
    async with conn.transaction():
        access = await study_access(conn, principal, study_uid)
        series = _targets(access, series_uid, album)
        if not access.series[series[0]].albums[album].can_delete_series:
            raise ApiError(403, "no right to remove series from this album")
        cur = await conn.execute("DELETE FROM album_series WHERE album_id = %s AND series_uid = ANY(%s)"
                                 " RETURNING series_uid", (album, series))
        removed = [r["series_uid"] for r in await cur.fetchall()]
        if series_uid is not None:
            for s in removed:
                await events.record(conn, album_id=album, principal=principal, mutation_type="REMOVE_SERIES",
                                    study_uid=study_uid, series_uid=s)
        elif removed:
            await events.record(conn, album_id=album, principal=principal, mutation_type="REMOVE_STUDY",
                                study_uid=study_uid, series_uids=removed)
        if removed:
            await webhooks.enqueue(conn, album, "remove_series", {"study": study_uid, "series": removed,
                                                                  **webhooks.source(principal)})
        return len(removed)


async def favorite(conn, principal, study_uid: str, series_uid: str | None, album: str | None, value: bool) -> None:
    """Mark visible series of ``album`` (default: the inbox) as favorite: curation by a member, so a share
    link or a read-only token may not (checked before anything is looked at)."""
    require_write_capable(principal, "changing favorites")
    album = album or principal.inbox_id
    access = await study_access(conn, principal, study_uid)
    series = _targets(access, series_uid, album)
    await conn.execute("UPDATE album_series SET favorite = %s WHERE album_id = %s AND series_uid = ANY(%s)",
                       (value, album, series))
