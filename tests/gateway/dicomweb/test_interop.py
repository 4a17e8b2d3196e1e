"""Interop: the PyPI ``dicomweb-client`` searches, retrieves and stores through the gateway with a bearer token."""

from __future__ import annotations

import io

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from tests.data.dicomgen import make_study


def test_dicomweb_client_store_search_retrieve(dwuser, dw):
    alice = dwuser("alice")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {alice.token}"
    client = DICOMwebClient(url=f"{dw}/api", session=session)
    study = make_study(series=("CT", "MR"), instances_per_series=2)
    datasets = [pydicom.dcmread(io.BytesIO(d)) for d in study.all_instances()]
    reply = client.store_instances(datasets)
    assert len(reply.ReferencedSOPSequence) == 4
    found = client.search_for_studies(search_filters={"PatientID": study.patient_id})
    assert [f["0020000D"]["Value"][0] for f in found] == [study.study_uid]
    series = client.search_for_series(study.study_uid)
    assert {s["0020000E"]["Value"][0] for s in series} == {s.series_uid for s in study.series}
    se = study.series[0]
    instances = client.search_for_instances(study.study_uid, se.series_uid)
    assert {i["00080018"]["Value"][0] for i in instances} == set(se.sop_uids)
    got = client.retrieve_study(study.study_uid)
    assert {d.SOPInstanceUID for d in got} == {d.SOPInstanceUID for d in datasets}
    inst = client.retrieve_instance(study.study_uid, se.series_uid, se.sop_uids[0])
    assert inst.PixelData == datasets[0].PixelData
    meta = client.retrieve_series_metadata(study.study_uid, se.series_uid)
    assert len(meta) == 2
    frames = client.retrieve_instance_frames(study.study_uid, se.series_uid, se.sop_uids[0], frame_numbers=[1])
    assert frames[0] == datasets[0].PixelData
    # an unauthenticated client gets nothing
    anon = DICOMwebClient(url=f"{dw}/api")
    try:
        anon.search_for_studies()
        raise AssertionError("anonymous search succeeded")
    except requests.HTTPError as e:
        assert e.response.status_code == 401
