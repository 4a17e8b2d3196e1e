"""The OHIF launch as KHEOPS serves it: the server configuration and the study's OHIF (v1 / v2) metadata.

The KHEOPS UI opens OHIF with ``url=<root>/api/link/<viewer token>/ohifservermetadata``: OHIF reads its DICOMweb
roots there (``qidoRoot`` = ``wadoRoot`` = the link root, so every request OHIF then makes carries the viewer
token in its path) and goes on with plain DICOMweb. ``/studies/{study}/ohifmetadata`` is the older JSON of OHIF
v1: the visible series of the study (``?album=`` / ``?inbox=true`` narrow them, ``?firstseries=`` puts one first),
each instance with its size and a WADO-URI URL under the same root.

Neither reply holds data beyond what the caller may view: the server configuration is URLs only, the study JSON
is built from instance QIDOs of the approved (visible) series and the index, never from another series.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from starlette.responses import JSONResponse

from kheopsctl.gateway.dicomweb import upstream

# the instance attributes OHIF's JSON needs, asked of the PACS per series
INSTANCE_FIELDS = (("includefield", "00200013"), ("includefield", "00280010"), ("includefield", "00280011"))
CONCURRENT_SERIES = 4


def server_configuration(root: str) -> dict:
    """OHIF's server list with one DICOMweb server: this gateway, at ``root``."""
    return {
        "transactionId": "testDICOMs",
        "servers": {"dicomWeb": [{
            "name": "kheops",
            "qidoRoot": root,
            "wadoRoot": root,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "staticWado": True,
            "omitQuotationForMultipartRequest": False,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        }]},
    }


def _value(item: dict, tag: str):
    v = (item.get(tag) or {}).get("Value") if isinstance(item, dict) else None
    return v[0] if isinstance(v, list) and v else None


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _wado_url(root: str, study: str, series: str, sop: str) -> str:
    query = urlencode([("studyUID", study), ("seriesUID", series), ("objectUID", sop), ("requestType", "WADO"),
                       ("contentType", "application/dicom")], safe="/")
    return f"wadouri:{root}/wado?{query}"


async def study_metadata(pacs, root: str, study_row: dict | None, series_rows: list[dict], first: str | None
                         ) -> JSONResponse:
    """OHIF v1's study JSON for the visible series ``series_rows`` (index rows) of one study. The caller has
    approved exactly those series upstream, for viewing."""
    study_uid = series_rows[0]["study_uid"]
    gate = asyncio.Semaphore(CONCURRENT_SERIES)

    async def instances(series_uid: str) -> list:
        async with gate:
            found = await pacs.get_json(f"/studies/{study_uid}/series/{series_uid}/instances", INSTANCE_FIELDS)
        return found if isinstance(found, list) else []

    found = await asyncio.gather(*(instances(r["series_uid"]) for r in series_rows))
    series_list = []
    for row, items in zip(series_rows, found):
        listed = []
        for item in items:
            sop = _value(item, "00080018")
            if not isinstance(sop, str) or not upstream.is_uid(sop):
                continue
            listed.append(((_int(_value(item, "00200013")), sop), {
                "sopInstanceUid": sop,
                "columns": _int(_value(item, "00280011")),
                "rows": _int(_value(item, "00280010")),
                "url": _wado_url(root, study_uid, row["series_uid"], sop),
            }))
        if not listed:
            continue  # a series without instances has nothing to show
        entry = {"instances": [i for _, i in sorted(listed, key=lambda x: x[0])],
                 "seriesInstanceUid": row["series_uid"]}
        if row.get("series_description"):
            entry["seriesDescription"] = row["series_description"]
        key = (row["series_uid"] != first, row.get("series_number") or 0, row["series_uid"])
        series_list.append((key, entry))
    study = {"seriesList": [e for _, e in sorted(series_list, key=lambda x: x[0])],
             "studyInstanceUID": study_uid, "studyInstanceUid": study_uid}
    if study_row is not None and study_row.get("patient_name"):
        study["patientName"] = study_row["patient_name"]
    return JSONResponse({"studies": [study]})
