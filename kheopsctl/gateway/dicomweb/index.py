"""The study/series index: rows created from STOW headers, then attributes read back from the PACS's QIDO."""

from __future__ import annotations

import logging

import psycopg

from kheopsctl.gateway.dicomweb.dicomheader import InstanceHeader
from kheopsctl.gateway.dicomweb.pacs import Pacs

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
    "body_part_examined": "00180015", "series_uid": "0020000E",
}
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
    return None if v is None else str(v)


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
        " body_part_examined) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (series_uid) DO NOTHING",
        (header.series_uid, header.study_uid, header.attrs.get("Modality"), header.attrs.get("SeriesDescription"),
         int(number) if number and number.lstrip("-").isdigit() else None, header.attrs.get("BodyPartExamined")))


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
    found = await pacs.get_json(f"/studies/{study_uid}/series", {"includefield": "all"})
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
            " populated = true, updated_time = now() WHERE series_uid = %s",
            (json_value(item, "00080060"), json_value(item, "0008103E"),
             int(float(number)) if number else None, json_value(item, "00180015"),
             int(float(count)) if count else None, uid))
