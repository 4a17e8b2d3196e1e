"""Counts over the index: /inboxinfo and album counts / modalities / modality filter.

The index rows are written straight into PostgreSQL here (the DICOMweb tests fill it through real STOW); what is
under test is the REST side's SQL over them.
"""

from __future__ import annotations

import psycopg
from pydicom.uid import generate_uid


def seed(pg, album_id: str, study: str, series: list[tuple[str, str, int]]) -> None:
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO studies (study_uid, patient_id) VALUES (%s, 'P') ON CONFLICT DO NOTHING", (study,))
        for uid, modality, instances in series:
            conn.execute("INSERT INTO series (series_uid, study_uid, modality, number_of_instances, populated)"
                         " VALUES (%s, %s, %s, %s, true) ON CONFLICT DO NOTHING", (uid, study, modality, instances))
            conn.execute("INSERT INTO album_series (album_id, series_uid) VALUES (%s, %s)", (album_id, uid))


def inbox_of(pg, sub: str) -> str:
    with psycopg.connect(pg) as conn:
        return conn.execute("SELECT inbox_id FROM users WHERE sub = %s", (sub,)).fetchone()[0]


def test_inboxinfo_counts(make_user, pg, unique):
    alice = make_user("alice")
    inbox = inbox_of(pg, alice.sub)
    root = generate_uid()
    seed(pg, inbox, f"{root}.1", [(f"{root}.1.1", "CT", 10), (f"{root}.1.2", "SR", 1)])
    seed(pg, inbox, f"{root}.2", [(f"{root}.2.1", "MR", 5)])
    assert alice.client.get("/inboxinfo").json() == {
        "number_of_studies": 2, "number_of_series": 3, "number_of_instances": 16, "modalities": ["CT", "MR", "SR"]}


def test_album_counts_and_modality_filter(make_user, pg, unique):
    alice = make_user("alice")
    ct = alice.client.post("/albums", data={"name": "ct"}).json()["album_id"]
    empty = alice.client.post("/albums", data={"name": "empty"}).json()["album_id"]
    root = generate_uid()
    seed(pg, ct, f"{root}.1", [(f"{root}.1.1", "CT", 3), (f"{root}.1.2", "PT", 3)])
    album = alice.client.get(f"/albums/{ct}").json()
    assert (album["number_of_studies"], album["number_of_series"], album["modalities"]) == (1, 2, ["CT", "PT"])
    assert alice.client.get(f"/albums/{empty}").json()["modalities"] == []
    assert [a["album_id"] for a in alice.client.get("/albums", params={"modality": "PT"}).json()] == [ct]
    listed = alice.client.get("/albums", params={"sort": "-number_of_studies"}).json()
    assert listed[0]["album_id"] == ct
