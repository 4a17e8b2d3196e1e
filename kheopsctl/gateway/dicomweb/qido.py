"""Study QIDO from the index (SQL filters, sort and paging) and series/instance QIDO limited to visible series.

Counts (NumberOfStudyRelatedSeries/Instances) and ModalitiesInStudy cover only the series the caller may see:
they are aggregated over the visible (series, album) pairs in the same SQL statement, and ``X-Total-Count`` is a
window count over the filtered set, so paging happens in SQL.
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
}
_KW_LOWER = {k.lower(): k for k in list(STUDY_ATTRS) + list(TAG_TO_KEYWORD.values())}
CONTROL_PARAMS = {"album", "inbox", "includefield", "fuzzymatching", "sort", "favorite", "limit", "offset",
                  "access_token"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000


def keyword(name: str) -> str | None:
    n = name.strip()
    up = n.upper()
    if re.fullmatch(r"[0-9A-F]{8}", up):
        return TAG_TO_KEYWORD.get(up)
    return _KW_LOWER.get(n.lower())


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


def _range(column: str, value: str, what: str) -> Sql:
    if not re.fullmatch(r"[0-9.:]*-?[0-9.:]*", value):
        raise ApiError(400, f"invalid {what} value")
    if "-" in value:
        lo, hi = value.split("-", 1)
        clauses = []
        if lo:
            clauses.append(Sql(f"st.{column} >= %s", lo))
        if hi:
            clauses.append(Sql(f"st.{column} <= %s", hi) if what == "date"
                           else Sql(f"substr(st.{column}, 1, %s) <= %s", len(hi), hi))
        return Sql.join(" AND ", clauses) if clauses else Sql("true")
    return Sql(f"st.{column} = %s", value) if what == "date" else Sql(f"st.{column} LIKE %s", value + "%")


@dataclass
class StudyQuery:
    filters: list[Sql]  # conditions on the studies row ``st``, each with its own arguments
    modalities: list[str]
    includefields: set[str]
    order: str
    limit: int
    offset: int
    favorite: bool

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


def parse_study_query(params) -> StudyQuery:
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
            raise ApiError(400, f"unsupported QIDO filter: {name[:64]}")
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
    includefields: set[str] = set()
    for v in params.getlist("includefield"):
        for f in re.split(r"[,\s]", v):
            if f:
                includefields.add("all" if f.lower() == "all" else (keyword(f) or f))
    sort = params.get("sort", "")
    order = "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.study_uid"
    if sort:
        desc = sort.startswith("-")
        kw = keyword(sort.lstrip("-+"))
        if kw not in STUDY_ATTRS:
            raise ApiError(400, "unsupported sort attribute")
        col = STUDY_ATTRS[kw][0]
        order = f"st.{col} {'DESC NULLS LAST' if desc else 'ASC NULLS LAST'}, st.study_uid"
    limit, offset = paging(params)
    return StudyQuery(filters, modalities, includefields, order, limit, offset,
                      params.get("favorite", "").lower() == "true")


def _visible(albums: list[str]) -> Sql:
    return Sql(
        "WITH v AS MATERIALIZED (SELECT s.series_uid, s.study_uid, s.modality, s.number_of_instances,"
        "  bool_or(als.favorite) AS favorite FROM album_series als JOIN series s ON s.series_uid = als.series_uid"
        "  WHERE als.album_id = ANY(%s) GROUP BY s.series_uid)", list(albums))


def _filtered(q: StudyQuery, select: str) -> Sql:
    return (Sql(f"SELECT {select} FROM studies st WHERE st.study_uid IN (SELECT study_uid FROM v)")
            + Sql.join("", [Sql(" AND ") + c for c in q.conditions()]))


def study_sql(q: StudyQuery, albums: list[str]) -> tuple[str, list]:
    """Visible series -> filtered, sorted page of studies (SQL LIMIT/OFFSET, window total) -> aggregates for
    the page only (counts and modalities over visible series), so the cost does not grow with every study
    the caller can see."""
    outer_order = q.order.replace("st.", "page.")
    return (
        _visible(albums)
        + ", page AS (" + _filtered(q, "st.*, count(*) OVER () AS total")
        + Sql(f" ORDER BY {q.order} LIMIT %s OFFSET %s)", q.limit, q.offset)
        + ", agg AS (SELECT v.study_uid, count(*) AS nseries, sum(v.number_of_instances) AS ninstances,"
          "  array_agg(DISTINCT v.modality) AS modalities FROM v WHERE v.study_uid IN (SELECT study_uid FROM page)"
          "  GROUP BY v.study_uid)"
          " SELECT page.*, agg.nseries, agg.ninstances, agg.modalities FROM page JOIN agg USING (study_uid)"
          f" ORDER BY {outer_order}"
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
    "SeriesInstanceUID": ("series_uid", "UI"),
}
# tag -> (index column, VR) of the attributes copied as they are from an index row into a QIDO answer
STUDY_COLUMNS = {tag: STUDY_ATTRS[kw] for tag, kw in TAG_TO_KEYWORD.items() if kw in STUDY_ATTRS}
SERIES_COLUMNS = {tag: SERIES_ATTRS[kw] for tag, kw in TAG_TO_KEYWORD.items() if kw in SERIES_ATTRS}


def _columns(row: dict, columns: dict) -> dict:
    return {tag: _el(vr, row.get(col)) for tag, (col, vr) in columns.items()}


def study_json(row: dict, retrieve_base: str) -> dict:
    out = {
        **CHARSET,
        **_columns(row, STUDY_COLUMNS),
        "00080061": _el("CS", sorted(m for m in (row.get("modalities") or []) if m)),
        "00081190": _el("UR", f"{retrieve_base}/studies/{row['study_uid']}"),
        "00201206": _el("IS", int(row["nseries"] or 0)),
        "00201208": _el("IS", int(row["ninstances"] or 0)),
    }
    return dict(sorted(out.items()))


def series_json(row: dict, study: dict | None, retrieve_base: str) -> dict:
    out = {
        **CHARSET,
        **_columns(row, SERIES_COLUMNS),
        "00081190": _el("UR", f"{retrieve_base}/studies/{row['study_uid']}/series/{row['series_uid']}"),
        "0020000D": _el("UI", row["study_uid"]),
        "00201209": _el("IS", int(row["number_of_instances"] or 0)),
    }
    if study:
        for tag, value in _columns(study, STUDY_COLUMNS).items():
            out.setdefault(tag, value)
    return dict(sorted(out.items()))


def series_filters(params) -> tuple[list[str], list]:
    """Series QIDO conditions on ``s``: the clauses, and their arguments in the same order."""
    pieces: list[Sql] = []
    for name, value in params.multi_items():
        if name in CONTROL_PARAMS or value == "":
            continue
        kw = keyword(name)
        if kw not in SERIES_ATTRS:
            raise ApiError(400, f"unsupported series QIDO filter: {name[:64]}")
        column, vr = SERIES_ATTRS[kw]
        if vr == "UI":
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
