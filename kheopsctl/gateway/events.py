"""The event log: per-album comments and mutations (the audit trail, mirrored to the audit log stream) and
comments on studies (``album_id`` NULL). A comment with a private target is seen by its author and target only."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from kheopsctl.gateway.auth import Principal

audit = logging.getLogger("kheopsctl.gateway.audit")

MUTATION_TYPES = frozenset(
    {
        "ADD_USER", "ADD_ADMIN", "REMOVE_USER", "PROMOTE_ADMIN", "DEMOTE_ADMIN", "CREATE_ALBUM", "LEAVE_ALBUM",
        "IMPORT_STUDY", "IMPORT_SERIES", "REMOVE_STUDY", "REMOVE_SERIES", "EDIT_ALBUM", "CREATE_WEBHOOK",
        "DELETE_WEBHOOK", "EDIT_WEBHOOK", "NEW_REPORT", "CREATE_REPORT_PROVIDER", "EDIT_REPORT_PROVIDER",
        "DELETE_REPORT_PROVIDER", "TRIGGER_WEBHOOK",
    }
)


async def record(
    conn: psycopg.AsyncConnection,
    *,
    album_id: str | None,
    principal: Principal,
    mutation_type: str | None = None,
    comment: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    target_user_id: int | None = None,
    private_target_id: int | None = None,
    series_uids: list[str] | None = None,
) -> int:
    """Append one event (a mutation when ``mutation_type`` is given, else a comment) and bump the album's
    last_event_time (not for a private comment, as KHEOPS). ``series_uids``: the series a study-level mutation
    moved. Returns the event id."""
    if mutation_type is not None and mutation_type not in MUTATION_TYPES:
        raise ValueError(f"unknown mutation type {mutation_type}")
    event_type = "mutation" if mutation_type else "comment"
    cap_id = principal.capability.id if principal.capability else None
    cur = await conn.execute(
        "INSERT INTO events (album_id, user_id, actor_sub, capability_id, event_type, mutation_type, comment,"
        " study_uid, series_uid, target_user_id, private_target_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (album_id, principal.user_id, principal.act_sub, cap_id, event_type, mutation_type, comment, study_uid,
         series_uid, target_user_id, private_target_id),
    )
    row = await cur.fetchone()
    event_id = row["id"] if isinstance(row, dict) else row[0]
    for s in series_uids or ():
        await conn.execute("INSERT INTO event_series (event_id, series_uid) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (event_id, s))
    if album_id is not None and private_target_id is None:
        await conn.execute("UPDATE albums SET last_event_time = now() WHERE id = %s", (album_id,))
    audit.info(
        "album event",
        extra={
            "audit": {
                "event": event_type, "mutation": mutation_type, "album": album_id, "user": principal.sub,
                "actor": principal.act_sub, "capability": cap_id, "study": study_uid, "series": series_uid,
                "target_user": target_user_id, "private": private_target_id is not None,
            }
        },
    )
    return event_id
