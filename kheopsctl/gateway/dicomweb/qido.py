"""Study and series QIDO from the index (SQL filters, sort and paging), limited to visible series.

Counts (NumberOfStudyRelatedSeries/Instances) and ModalitiesInStudy cover only the series the caller may see:
they are aggregated over the visible (series, album) pairs in the same SQL statement, and ``X-Total-Count`` is a
window count over the filtered set, so paging happens in SQL.

KHEOPS's QIDO rules, which KHEOPS clients rely on: parameters that are not a supported attribute are ignored;
``limit`` is at least 1 (0, negative or not a number: 400); an answer without any study is 204 with
``X-Total-Count``; ``includefield=favorite`` (or ``00012345``) adds SumFavorites (0001,2345), IS: how many of the
study's visible series are favorites in the album; ``includefield=comments`` (or ``00012346``) adds SumComments
(0001,2346), IS: the study's comments the caller may read. Favorites exist per album, so ``includefield=favorite``
and the ``favorite`` filter need ``album`` or ``inbox=true`` (else 400), and at series level the favorite field is
0001,2345 SH "true"/"false".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kheopsctl.gateway.errors import ApiError

# QIDO attribute (keyword or tag) -> (index column, VR)
STUDY_ATTRS = {
    "StudyDate": ("study_date", "DA"), "StudyTime": ("study_time", "TM"),
    "AccessionNumber": ("accession_number", "SH"), "ReferringPhysicianName": ("referring_physician_name", "PN"),
    "PatientName": ("patient_name", "PN"), "PatientID": ("patient_id", "LO"),
    "PatientBirthDate": ("patient_birth_date", "DA"), "PatientSex": ("patient_sex", "CS"),
    "StudyInstanceUID": ("study_uid", "UI"), "StudyID": ("study_id", "SH"),
    "StudyDescription": ("study_description", "LO"),
}
TAG_TO_KEYWORD = {
    "00080020": "StudyDate", "00080030": "StudyTime", "00080050": "AccessionNumber",
    "00080090": "ReferringPhysicianName", "00100010": "PatientName", "00100020": "PatientID",
    "00100030": "PatientBirthDate", "00100040": "PatientSex", "0020000D": "StudyInstanceUID",
    "00200010": "StudyID", "00081030": "StudyDescription", "00080061": "ModalitiesInStudy",
    "00201206": "NumberOfStudyRelatedSeries", "00201208": "NumberOfStudyRelatedInstances",
    "00080060": "Modality", "0008103E": "SeriesDescription", "00200011": "SeriesNumber",
    "00180015": "BodyPartExamined", "0020000E": "SeriesInstanceUID", "00201209": "NumberOfSeriesRelatedInstances",
    "00080021": "SeriesDate", "00080031": "SeriesTime",
}
_KW_LOWER = {k.lower(): k for k in list(STUDY_ATTRS) + list(TAG_TO_KEYWORD.values())}
CONTROL_PARAMS = {"album", "inbox", "includefield", "fuzzymatching", "sort", "favorite", "limit", "offset",
                  "access_token"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000
# KHEOPS's private attributes (its UI reads them by tag)
SUM_FAVORITES = "00012345"
SUM_COMMENTS = "00012346"
INSTANCE_AVAILABILITY = "00080056"


def keyword(name: str) -> str | None:
    n = name.strip()
    up = n.upper()
    if re.fullmatch(r"[0-9A-F]{8}", up):
        return TAG_TO_KEYWORD.get(up)
    return _KW_LOWER.get(n.lower())


def study_paging(params) -> tuple[int, int]:
    """Study QIDO paging as KHEOPS does it: ``limit`` >= 1 (absent: everything, up to MAX_LIMIT here)."""
    raw = params.get("limit")
    if raw is not None:
        try:
            if int(raw) < 1:
                raise ValueError
        except ValueError:
            raise ApiError(400, "'limit' must be an integer >= 1") from None
    return paging(params)


def paging(params) -> tuple[int, int]:
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
        offset = int(params.get("offset", 0))
    except ValueError:
        raise ApiError(400, "limit and offset must be integers") from None
    if limit < 0 or offset < 0:
        raise ApiError(400, "limit and offset must not be negative")
    return min(limit, MAX_LIMIT), offset


def _wildcard(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


class Sql:
    """A piece of SQL text together with the arguments of its ``%s`` placeholders, in order.

    Statements are only ever assembled by joining pieces, so a clause can never be separated from its
    arguments and the placeholders and the bound values cannot drift apart (as they did when a filter was
    appended to the clause list in one place and to the argument list in another)."""

    __slots__ = ("text", "args")

    def __init__(self, text: str, *args):
        if text.count("%s") != len(args) or "%(" in text:
            raise ValueError(f"{text.count('%s')} placeholders for {len(args)} arguments in {text!r}")
        self.text, self.args = text, tuple(args)

    def __add__(self, other: "Sql | str") -> "Sql":
        other = other if isinstance(other, Sql) else Sql(other)
        return Sql(self.text + other.text, *self.args, *other.args)

    @staticmethod
    def join(sep: str, parts: list["Sql"]) -> "Sql":
        out = Sql("")
        for i, part in enumerate(parts):
            out = out + (sep if i else "") + part
        return out

    def statement(self) -> tuple[str, list]:
        return self.text, list(self.args)


def _range(column: str, value: str, what: str, table: str = "st") -> Sql:
    if not re.fullmatch(r"[0-9.:]*-?[0-9.:]*", value):
        raise ApiError(400, f"invalid {what} value")
    col = f"{table}.{column}"
    if "-" in value:
        lo, hi = value.split("-", 1)
        clauses = []
        if lo:
            clauses.append(Sql(f"{col} >= %s", lo))
        if hi:
            clauses.append(Sql(f"{col} <= %s", hi) if what == "date"
                           else Sql(f"substr({col}, 1, %s) <= %s", len(hi), hi))
        return Sql.join(" AND ", clauses) if clauses else Sql("true")
    return Sql(f"{col} = %s", value) if what == "date" else Sql(f"{col} LIKE %s", value + "%")


@dataclass
class StudyQuery:
    filters: list[Sql]  # conditions on the studies row ``st``, each with its own arguments
    modalities: list[str]
    includefields: set[str]
    order: str
    limit: int
    offset: int
    favorite: bool

    @property
    def sum_favorites(self) -> bool:
        return SUM_FAVORITES in self.includefields

    @property
    def sum_comments(self) -> bool:
        return SUM_COMMENTS in self.includefields

    def add(self, clause: str, *args) -> None:
        self.filters.append(Sql(clause, *args))

    def conditions(self) -> list[Sql]:
        out = list(self.filters)
        if self.modalities:
            out.append(Sql("EXISTS (SELECT 1 FROM v WHERE v.study_uid = st.study_uid AND v.modality = ANY(%s))",
                           list(self.modalities)))
        if self.favorite:
            out.append(Sql("EXISTS (SELECT 1 FROM v WHERE v.study_uid = st.study_uid AND v.favorite)"))
        return out


def parse_study_query(params, *, has_source: bool | None = None) -> StudyQuery:
    """``has_source``: the query is narrowed to one album (default: ``album`` or ``inbox=true`` given; an album
    token is narrowed to its album without either, as in KHEOPS)."""
    filters: list[Sql] = []
    modalities: list[str] = []
    fuzzy = params.get("fuzzymatching", "false").lower() == "true"
    for name, value in params.multi_items():
        if name in CONTROL_PARAMS or value == "":
            continue
        kw = keyword(name)
        if kw == "ModalitiesInStudy" or kw == "Modality":
            modalities += [m for m in re.split(r"[\\,]", value.upper()) if m]
            continue
        if kw not in STUDY_ATTRS:
            continue  # as KHEOPS: a parameter that is not a study attribute it filters on is ignored
        column, vr = STUDY_ATTRS[kw]
        if vr == "DA":
            clause = _range(column, value, "date")
        elif vr == "TM":
            clause = _range(column, value, "time")
        elif vr == "UI":
            clause = Sql(f"st.{column} = ANY(%s)", [u for u in re.split(r"[\\,]", value) if u])
        elif vr == "PN" or "*" in value or "?" in value:
            pattern = _wildcard(value)
            if vr == "PN" and "*" not in value and fuzzy:
                pattern += "%"
            op = "ILIKE" if (fuzzy or vr == "PN") else "LIKE"
            clause = Sql(f"st.{column} {op} %s", pattern)
        else:
            clause = Sql(f"st.{column} = %s", value)
        filters.append(clause)
    includefields = include_fields(params)
    favorite = favorite_filter(params)
    if has_source is None:
        has_source = _one_source(params)
    if (favorite is not None or SUM_FAVORITES in includefields) and not has_source:
        raise ApiError(400, "favorites exist per album: with includefield=favorite or favorite, give album=<id>"
                            " or inbox=true")
    if favorite is False:
        raise ApiError(400, "the 'favorite' filter can only be true")
    sort = params.get("sort", "")
    order = "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.study_uid"
    if sort:
        desc = sort.startswith("-")
        kw = keyword(sort.lstrip("-+"))
        if kw not in STUDY_ATTRS:
            raise ApiError(400, "unsupported sort attribute")
        col = STUDY_ATTRS[kw][0]
        order = f"st.{col} {'DESC NULLS LAST' if desc else 'ASC NULLS LAST'}, st.study_uid"
    limit, offset = study_paging(params)
    return StudyQuery(filters, modalities, includefields, order, limit, offset, bool(favorite))


def include_fields(params) -> set[str]:
    """The includefield values (repeated or comma-separated) as keywords, or KHEOPS's private tags."""
    out: set[str] = set()
    for v in params.getlist("includefield"):
        for f in re.split(r"[,\s]", v):
            if not f:
                continue
            low = f.lower()
            if low in ("favorite", SUM_FAVORITES):
                out.add(SUM_FAVORITES)
            elif low in ("comments", SUM_COMMENTS):
                out.add(SUM_COMMENTS)
            else:
                out.add("all" if low == "all" else (keyword(f) or f))
    return out


def favorite_filter(params) -> bool | None:
    raw = params.get("favorite")
    if raw is None or raw == "":
        return None
    return raw.strip().lower() == "true"


def _one_source(params) -> bool:
    return bool(params.get("album")) or params.get("inbox", "").lower() == "true"


def _visible(albums: list[str]) -> Sql:
    return Sql(
        "WITH v AS MATERIALIZED (SELECT s.series_uid, s.study_uid, s.modality, s.number_of_instances,"
        "  bool_or(als.favorite) AS favorite FROM album_series als JOIN series s ON s.series_uid = als.series_uid"
        "  WHERE als.album_id = ANY(%s) GROUP BY s.series_uid)", list(albums))


def _filtered(q: StudyQuery, select: str) -> Sql:
    return (Sql(f"SELECT {select} FROM studies st WHERE st.study_uid IN (SELECT study_uid FROM v)")
            + Sql.join("", [Sql(" AND ") + c for c in q.conditions()]))


def study_sql(q: StudyQuery, albums: list[str], user_id: int | None = None) -> tuple[str, list]:
    """Visible series -> filtered, sorted page of studies (SQL LIMIT/OFFSET, window total) -> aggregates for
    the page only (counts, modalities and favorites over visible series), so the cost does not grow with every
    study the caller can see. SumComments counts the comments on the study (``album_id`` NULL, migration 0007)
    that ``user_id`` may read: public ones, and private ones written by or to them (KHEOPS's count)."""
    outer_order = q.order.replace("st.", "page.")
    comments = Sql("")
    if q.sum_comments:
        comments = Sql(", (SELECT count(*) FROM events e WHERE e.event_type = 'comment' AND e.album_id IS NULL"
                       " AND e.study_uid = page.study_uid AND (e.private_target_id IS NULL"
                       " OR e.private_target_id = %s OR e.user_id = %s)) AS ncomments", user_id, user_id)
    return (
        _visible(albums)
        + ", page AS (" + _filtered(q, "st.*, count(*) OVER () AS total")
        + Sql(f" ORDER BY {q.order} LIMIT %s OFFSET %s)", q.limit, q.offset)
        + ", agg AS (SELECT v.study_uid, count(*) AS nseries, sum(v.number_of_instances) AS ninstances,"
          "  array_agg(DISTINCT v.modality) AS modalities, count(*) FILTER (WHERE v.favorite) AS nfavorites"
          "  FROM v WHERE v.study_uid IN (SELECT study_uid FROM page) GROUP BY v.study_uid)"
          " SELECT page.*, agg.nseries, agg.ninstances, agg.modalities, agg.nfavorites" + comments
        + f" FROM page JOIN agg USING (study_uid) ORDER BY {outer_order}"
    ).statement()


def count_sql(q: StudyQuery, albums: list[str]) -> tuple[str, list]:
    """The filtered total alone (used when the page is empty, e.g. an offset past the end)."""
    return (_visible(albums) + " " + _filtered(q, "count(*) AS total")).statement()


def _el(vr: str, value) -> dict:
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": value}]}
    if isinstance(value, list):
        return {"vr": vr, "Value": value}
    return {"vr": vr, "Value": [value]}


CHARSET = {"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}}

SERIES_ATTRS = {
    "Modality": ("modality", "CS"), "SeriesDescription": ("series_description", "LO"),
    "SeriesNumber": ("series_number", "IS"), "BodyPartExamined": ("body_part_examined", "CS"),
    "SeriesInstanceUID": ("series_uid", "UI"), "SeriesDate": ("series_date", "DA"),
    "SeriesTime": ("series_time", "TM"),
}
# tag -> (index column, VR) of the attributes copied as they are from an index row into a QIDO answer
STUDY_COLUMNS = {tag: STUDY_ATTRS[kw] for tag, kw in TAG_TO_KEYWORD.items() if kw in STUDY_ATTRS}
SERIES_COLUMNS = {tag: SERIES_ATTRS[kw] for tag, kw in TAG_TO_KEYWORD.items() if kw in SERIES_ATTRS}


def _columns(row: dict, columns: dict) -> dict:
    return {tag: _el(vr, row.get(col)) for tag, (col, vr) in columns.items()}


def study_json(row: dict, retrieve_base: str, includefields: set[str] = frozenset()) -> dict:
    out = {
        **CHARSET,
        **_columns(row, STUDY_COLUMNS),
        "00080061": _el("CS", sorted(m for m in (row.get("modalities") or []) if m)),
        INSTANCE_AVAILABILITY: _el("CS", "ONLINE"),
        "00081190": _el("UR", f"{retrieve_base}/studies/{row['study_uid']}"),
        "00201206": _el("IS", int(row["nseries"] or 0)),
        "00201208": _el("IS", int(row["ninstances"] or 0)),
    }
    if SUM_FAVORITES in includefields:
        out[SUM_FAVORITES] = _el("IS", int(row.get("nfavorites") or 0))
    if SUM_COMMENTS in includefields:
        out[SUM_COMMENTS] = _el("IS", int(row.get("ncomments") or 0))
    return dict(sorted(out.items()))


def series_json(row: dict, study: dict | None, retrieve_base: str, favorite: bool = False) -> dict:
    """One series; ``favorite``: add 0001,2345 (SH "true"/"false", as KHEOPS) from the row's ``favorite``."""
    out = {
        **CHARSET,
        **_columns(row, SERIES_COLUMNS),
        "00081190": _el("UR", f"{retrieve_base}/studies/{row['study_uid']}/series/{row['series_uid']}"),
        "0020000D": _el("UI", row["study_uid"]),
        "00201209": _el("IS", int(row["number_of_instances"] or 0)),
    }
    if favorite:
        out[SUM_FAVORITES] = _el("SH", "true" if row.get("favorite") else "false")
    if study:
        for tag, value in _columns(study, STUDY_COLUMNS).items():
            out.setdefault(tag, value)
    return dict(sorted(out.items()))


def series_filters(params) -> tuple[list[str], list]:
    """Series QIDO conditions on ``s``: the clauses, and their arguments in the same order. Parameters that
    are not a series attribute are ignored (KHEOPS forwards them to its PACS, which ignores what it does not
    know)."""
    pieces: list[Sql] = []
    for name, value in params.multi_items():
        if name in CONTROL_PARAMS or value == "":
            continue
        kw = keyword(name)
        if kw not in SERIES_ATTRS:
            continue
        column, vr = SERIES_ATTRS[kw]
        if vr in ("DA", "TM"):
            pieces.append(_range(column, value, "date" if vr == "DA" else "time", table="s"))
        elif vr == "UI":
            pieces.append(Sql(f"s.{column} = ANY(%s)", [u for u in re.split(r"[\\,]", value) if u]))
        elif vr == "IS":
            try:
                pieces.append(Sql(f"s.{column} = %s", int(value)))
            except ValueError:
                raise ApiError(400, f"invalid {kw}") from None
        elif "*" in value or "?" in value:
            pieces.append(Sql(f"s.{column} LIKE %s", _wildcard(value)))
        else:
            pieces.append(Sql(f"s.{column} = %s", value))
    return [p.text for p in pieces], [a for p in pieces for a in p.args]


def series_sql(study_uid: str, visible: list[str], params, favorite_album: str | None,
               count_only: bool = False) -> tuple[str, list]:
    """The page of the study's visible series matching the filters (window total); with ``favorite_album``,
    each row's ``favorite`` flag in that album, and the ``favorite`` filter (true or false) applied.
    ``count_only``: the total alone (for an empty page, e.g. an offset past the end)."""
    where, args = series_filters(params)
    limit, offset = paging(params)
    select = Sql("SELECT s.*, count(*) OVER () AS total")
    source = Sql(" FROM series s")
    conditions = [Sql("s.study_uid = %s", study_uid), Sql("s.series_uid = ANY(%s)", list(visible))]
    if where:
        conditions.append(Sql(" AND ".join(where), *args))
    if favorite_album is not None:
        select = select + ", COALESCE(fav.favorite, false) AS favorite"
        source = source + Sql(" LEFT JOIN album_series fav ON fav.series_uid = s.series_uid AND fav.album_id = %s",
                              favorite_album)
        wanted = favorite_filter(params)
        if wanted is not None:
            conditions.append(Sql("COALESCE(fav.favorite, false) = %s", wanted))
    if count_only:
        return (Sql("SELECT count(*) AS total") + source + " WHERE " + Sql.join(" AND ", conditions)).statement()
    return (select + source + " WHERE " + Sql.join(" AND ", conditions)
            + Sql(" ORDER BY s.series_number NULLS LAST, s.series_uid LIMIT %s OFFSET %s", limit, offset)).statement()
