"""The gateway's write lock (kheopsctl/gateway/quiesce.py), on the real gateway, PostgreSQL and Orthanc.

A backup holds the lock exclusively: a STOW is then answered 503 with Retry-After and sends nothing to the
PACS, while reads keep working. A STOW in flight holds the lock shared: the backup waits for it.
"""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from kheopsctl.gateway.quiesce import WRITE_LOCK
from tests.data.dicomgen import make_study, multipart_related
from tests.gateway.conftest import api, dw, gateway, gateway_factory, make_user, oidc, orthanc, pg, unique  # noqa: F401
from tests.gateway.dicomweb.conftest import stow_through, users_on

pytestmark = pytest.mark.services


def _exclusive(pg):  # noqa: F811 - the fixture's value
    conn = psycopg.connect(pg, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
    return conn


def _orthanc_has(orthanc, study_uid: str) -> bool:  # noqa: F811
    r = httpx.get(f"{orthanc.dicomweb_url}/studies", params={"StudyInstanceUID": study_uid}, timeout=30)
    assert r.status_code in (200, 204), r.text
    return bool(r.content.strip()) and r.json() != []


def test_a_backup_pauses_uploads_with_503_and_reads_go_on(dw, make_user, api, pg, orthanc):  # noqa: F811
    alice = users_on(dw, make_user, api, "alice")[0]
    before = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(alice.client, before).status_code == 200
    lock = _exclusive(pg)
    try:
        during = make_study(series=("CT",), instances_per_series=1)
        r = stow_through(alice.client, during)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) > 0
        assert "backup" in r.json()["error"]
        assert not _orthanc_has(orthanc, during.study_uid)  # nothing reached the PACS
        # reads are not paused
        listed = alice.client.get("/studies")
        assert listed.status_code == 200
        assert before.study_uid in listed.text
        assert alice.client.get(f"/studies/{before.study_uid}/metadata").status_code == 200
    finally:
        lock.close()  # the session ends: PostgreSQL releases the lock
    assert stow_through(alice.client, during).status_code == 200


def test_the_backup_waits_for_a_stow_in_flight(dw, make_user, api, pg):  # noqa: F811
    alice = users_on(dw, make_user, api, "alice")[0]
    study = make_study(series=("CT",), instances_per_series=2)
    body, ct = multipart_related(list(study.all_instances()))
    release = threading.Event()

    def slow_body():
        yield body[:100]
        release.wait(30)  # the STOW is in flight (first part begun) until the test lets it finish
        yield body[100:]

    result: dict = {}
    upload = threading.Thread(target=lambda: result.update(r=alice.client.post(
        "/studies", content=slow_body(), headers={"Content-Type": ct, "Accept": "application/dicom+json"})))
    upload.start()
    try:
        # the STOW's guard holds the shared lock
        with psycopg.connect(pg, autocommit=True) as probe:
            for _ in range(100):
                held = probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = %s", (WRITE_LOCK,)).fetchone()[0]
                if held:
                    break
                time.sleep(0.05)
            assert held == 1
            # the backup's exclusive request waits
            assert probe.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK,)).fetchone()[0] is False
        acquired = threading.Event()
        backup = threading.Thread(target=lambda: (_exclusive(pg).close(), acquired.set()))
        backup.start()
        assert not acquired.wait(1.0), "the exclusive lock was granted while a STOW was in flight"
        # while the backup waits, a new STOW is refused at once (PostgreSQL queues it behind the waiter)
        other = make_study(series=("CT",), instances_per_series=1)
        assert stow_through(api(alice.token, base_url=dw), other).status_code == 503
        release.set()
        upload.join(30)
        assert result["r"].status_code == 200, result["r"].text
        assert acquired.wait(10), "the backup did not get the lock once the STOW ended"
        backup.join(10)
    finally:
        release.set()
        upload.join(30)
    assert stow_through(alice.client, other).status_code == 200
