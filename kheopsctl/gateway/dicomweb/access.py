"""Which series of a study a principal may see, and what it may do with each: the per-series decision.

One SQL query per (principal, study) gives every (series, album) pair the caller belongs to; the album rights
come from ``permissions.rights`` (the same rules as the REST API), OR-ed over albums. Decisions are cached
for at most ``settings.access_cache_seconds`` (<= 10 s), so a revocation or removal applies within that delay,
and a hot WADO path costs no DB round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from kheopsctl.gateway.cache import TtlCache
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import AlbumRole, Rights, rights

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(uid: str) -> str:
    if len(uid) > 64 or not UID_RE.match(uid):
        raise ApiError(400, "malformed UID")
    return uid


NOT_FOUND = "not found"


@dataclass
class SeriesAccess:
    series_uid: str
    albums: dict[str, Rights] = field(default_factory=dict)  # album id -> rights there (readable albums only)

    @property
    def download(self) -> bool:
        return any(r.can_download for r in self.albums.values())

    @property
    def send(self) -> bool:
        return any(r.can_send for r in self.albums.values())

    def rights_in(self, album_id: str) -> Rights | None:
        return self.albums.get(album_id)


@dataclass
class StudyAccess:
    study_uid: str
    series: dict[str, SeriesAccess]  # visible series only

    def visible(self, album_id: str | None = None) -> list[str]:
        if album_id is None:
            return list(self.series)
        return [s for s, a in self.series.items() if album_id in a.albums]


_SQL = (
    "SELECT als.series_uid, a.id AS album_id, au.is_admin, a.is_inbox, a.add_user, a.download_series,"
    " a.send_series, a.delete_series, a.add_series, a.write_comments"
    " FROM series s JOIN album_series als ON als.series_uid = s.series_uid"
    " JOIN albums a ON a.id = als.album_id"
    " JOIN album_users au ON au.album_id = a.id AND au.user_id = %s"
    " WHERE s.study_uid = %s"
)


def principal_key(principal) -> tuple:
    cap = principal.capability
    return (principal.user_id, cap.id if cap else None)


class AccessDecider:
    def __init__(self, ttl: float):
        self.cache: TtlCache[StudyAccess] = TtlCache(min(ttl, 10.0), max_entries=50_000)

    async def study(self, conn_factory, principal, study_uid: str) -> StudyAccess:
        key = (principal_key(principal), study_uid)
        found = self.cache.get(key)
        if found is not None:
            return found
        async with conn_factory() as conn:
            decided = await study_access(conn, principal, study_uid)
        self.cache.put(key, decided)
        return decided

    def forget(self, study_uid: str | None = None) -> None:
        """After our own mutations: the caller sees its change at once (others within the TTL)."""
        self.cache.clear()


async def study_access(conn: psycopg.AsyncConnection, principal, study_uid: str) -> StudyAccess:
    cap = principal.capability
    if cap is not None and (not cap.read or (cap.study_uid is not None and cap.study_uid != study_uid)):
        return StudyAccess(study_uid, {})
    cur = await conn.execute(_SQL, (principal.user_id, study_uid))
    series: dict[str, SeriesAccess] = {}
    for row in await cur.fetchall():
        role = AlbumRole(album_id=row["album_id"], is_admin=row["is_admin"], is_inbox=row["is_inbox"],
                         add_user=row["add_user"], download_series=row["download_series"],
                         send_series=row["send_series"], delete_series=row["delete_series"],
                         add_series=row["add_series"], write_comments=row["write_comments"])
        r = rights(principal, role)
        if not r.can_read:
            continue
        series.setdefault(row["series_uid"], SeriesAccess(row["series_uid"])).albums[row["album_id"]] = r
    return StudyAccess(study_uid, series)
