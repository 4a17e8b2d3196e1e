"""The study/series/instance index: rows created from STOW headers, then attributes read back from the PACS's QIDO.

Instances (table ``instances``, migration 0004): one row per SOP Instance UID with the study and series the
PACS filed it in, written after the PACS confirmed a STOW (``record_instances``). Series indexed before that
table existed are backfilled from the PACS, once per series, the first time a STOW stores into them
(``backfill_instances``; ``series.instances_indexed`` says it is done). A series created by a STOW is complete
from the start. The index therefore answers "where is this SOP Instance UID" for what the gateway stored;
for anything else (never backfilled, or put into the PACS behind the gateway's back) ``pacs_instances`` asks
the PACS, many UIDs per QIDO.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader
from kheopsctl.gateway.dicomweb.pacs import Pacs
from kheopsctl.gateway.dicomweb.upstream import MAX_QUERY_VALUE

log = logging.getLogger("kheopsctl.gateway.index")

# index column -> DICOM tag (study level)
STUDY_TAGS = {
    "study_date": "00080020", "study_time": "00080030", "accession_number": "00080050",
    "referring_physician_name": "00080090", "patient_name": "00100010", "patient_id": "00100020",
    "patient_birth_date": "00100030", "patient_sex": "00100040", "study_uid": "0020000D",
    "study_id": "00200010", "study_description": "00081030",
}
SERIES_TAGS = {
    "modality": "00080060", "series_description": "0008103E", "series_number": "00200011",
    "body_part_examined": "00180015", "series_uid": "0020000E", "series_date": "00080021",
    "series_time": "00080031",
}
# series attributes a PACS returns only when asked by name
_SERIES_EXTRA = ("00080021", "00080031", "00180015")
_STUDY_KW = {
    "study_date": "StudyDate", "study_time": "StudyTime", "accession_number": "AccessionNumber",
    "referring_physician_name": "ReferringPhysicianName", "patient_name": "PatientName",
    "patient_id": "PatientID", "patient_birth_date": "PatientBirthDate", "patient_sex": "PatientSex",
    "study_id": "StudyID", "study_description": "StudyDescription",
}


def json_value(item: dict, tag: str) -> str | None:
    """The first value of a DICOM JSON attribute as text (PN: the alphabetic form)."""
    el = item.get(tag)
    if not el:
        return None
    values = el.get("Value")
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):
        v = v.get("Alphabetic")
    return None if v is None else str(v).replace("\x00", "")  # PostgreSQL text cannot hold NUL


async def ensure_rows(conn: psycopg.AsyncConnection, header: InstanceHeader) -> None:
    """Create the study and series rows from a STOW part's header if they do not exist yet."""
    cols = ["study_uid"] + list(_STUDY_KW)
    vals = [header.study_uid] + [header.attrs.get(kw) for kw in _STUDY_KW.values()]
    await conn.execute(
        f"INSERT INTO studies ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
        " ON CONFLICT (study_uid) DO NOTHING", vals)
    number = header.attrs.get("SeriesNumber")
    await conn.execute(
        "INSERT INTO series (series_uid, study_uid, modality, series_description, series_number,"
        " body_part_examined, series_date, series_time, instances_indexed)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true) ON CONFLICT (series_uid) DO NOTHING",
        (header.series_uid, header.study_uid, header.attrs.get("Modality"), header.attrs.get("SeriesDescription"),
         int(number) if number and number.lstrip("-").isdigit() else None, header.attrs.get("BodyPartExamined"),
         header.attrs.get("SeriesDate"), header.attrs.get("SeriesTime")))


async def refresh_from_pacs(conn: psycopg.AsyncConnection, pacs: Pacs, study_uid: str,
                            series_uids: list[str]) -> None:
    """Read the study's and these series' attributes (and instance counts) back from the PACS."""
    studies = await pacs.get_json("/studies", {"StudyInstanceUID": study_uid, "includefield": "all"})
    if studies:
        item = studies[0]
        sets = {col: json_value(item, tag) for col, tag in STUDY_TAGS.items() if col != "study_uid"}
        await conn.execute(
            "UPDATE studies SET " + ", ".join(f"{c} = COALESCE(%s, {c})" for c in sets)
            + ", updated_time = now() WHERE study_uid = %s", [*sets.values(), study_uid])
    # "all" is the PACS's default set (Orthanc leaves SeriesDate, SeriesTime, BodyPartExamined out of it)
    found = await pacs.get_json(f"/studies/{study_uid}/series",
                                [("includefield", "all"), *(("includefield", tag) for tag in _SERIES_EXTRA)])
    wanted = set(series_uids)
    for item in found if isinstance(found, list) else []:
        uid = json_value(item, "0020000E")
        if uid not in wanted:
            continue
        count = json_value(item, "00201209")
        number = json_value(item, "00200011")
        await conn.execute(
            "UPDATE series SET modality = COALESCE(%s, modality), series_description = COALESCE(%s,"
            " series_description), series_number = COALESCE(%s, series_number), body_part_examined ="
            " COALESCE(%s, body_part_examined), number_of_instances = COALESCE(%s, number_of_instances),"
            " series_date = COALESCE(%s, series_date), series_time = COALESCE(%s, series_time),"
            " populated = true, updated_time = now() WHERE series_uid = %s",
            (json_value(item, "00080060"), json_value(item, "0008103E"),
             int(float(number)) if number else None, json_value(item, "00180015"),
             int(float(count)) if count else None, json_value(item, "00080021"), json_value(item, "00080031"), uid))


# a UID list in one QIDO value stays under the upstream guard's bound for a query value
MAX_UID_LIST = MAX_QUERY_VALUE


def uid_batches(uids: list[str]) -> list[list[str]]:
    """Split into comma-joined lists of at most MAX_UID_LIST characters."""
    batches: list[list[str]] = []
    size = 0
    for uid in uids:
        if batches and size + 1 + len(uid) <= MAX_UID_LIST:
            batches[-1].append(uid)
            size += 1 + len(uid)
        else:
            batches.append([uid])
            size = len(uid)
    return batches


async def known_instances(conn: psycopg.AsyncConnection, sop_uids: list[str]) -> dict[str, tuple[str, str]]:
    """sop -> (study, series) for the UIDs the index knows."""
    if not sop_uids:
        return {}
    cur = await conn.execute("SELECT sop_uid, study_uid, series_uid FROM instances WHERE sop_uid = ANY(%s)",
                             (list(sop_uids),))
    return {r["sop_uid"]: (r["study_uid"], r["series_uid"]) for r in await cur.fetchall()}


async def pacs_instances(pacs: Pacs, sop_uids: list[str]) -> dict[str, set[tuple[str, str]]]:
    """sop -> every (study, series) the PACS holds it in, by UID-list QIDO (``SOPInstanceUID=a,b,...``).

    The UIDs were checked to be digits and dots, so the list cannot be widened (no wildcard, no separator)."""
    found: dict[str, set[tuple[str, str]]] = {}
    answers = await asyncio.gather(*(
        pacs.get_json("/instances", {"SOPInstanceUID": ",".join(batch), "includefield": "0020000D,0020000E"})
        for batch in uid_batches(list(dict.fromkeys(sop_uids)))))
    for items in answers:
        for item in items if isinstance(items, list) else []:
            sop = json_value(item, "00080018")
            if sop is not None:
                found.setdefault(sop, set()).add((json_value(item, "0020000D") or "",
                                                  json_value(item, "0020000E") or ""))
    return found


async def record_instances(conn: psycopg.AsyncConnection, rows: list[tuple[str, str, str, str]]) -> set[str]:
    """Insert (sop, study, series, sop class) rows; returns the SOP UIDs now indexed in exactly that series
    (new, or already there: a re-send). A UID indexed elsewhere is left alone and not returned."""
    if not rows:
        return set()
    await conn.execute(
        "INSERT INTO instances (sop_uid, study_uid, series_uid, sop_class_uid)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT (sop_uid) DO NOTHING",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] or None for r in rows]))
    known = await known_instances(conn, [r[0] for r in rows])
    return {sop for sop, study, series, _ in rows if known.get(sop) == (study, series)}


async def backfill_instances(conn: psycopg.AsyncConnection, pacs: Pacs, study_uid: str, series_uid: str) -> None:
    """Once per series indexed before the instance table: copy the PACS's instance list into it."""
    cur = await conn.execute("SELECT instances_indexed FROM series WHERE series_uid = %s", (series_uid,))
    row = await cur.fetchone()
    if row is None or row["instances_indexed"]:
        return
    items = await pacs.get_json(f"/studies/{study_uid}/series/{series_uid}/instances",
                                {"includefield": "00080016"})
    rows = []
    for item in items if isinstance(items, list) else []:
        sop = json_value(item, "00080018")
        if sop is not None and json_value(item, "0020000E") in (None, series_uid):
            rows.append((sop, study_uid, series_uid, json_value(item, "00080016") or ""))
    await record_instances(conn, rows)
    await conn.execute("UPDATE series SET instances_indexed = true WHERE series_uid = %s", (series_uid,))
