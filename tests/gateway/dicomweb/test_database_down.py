"""DICOMweb routes answer 503 (JSON) while the database is down, and recover when it is back."""

from __future__ import annotations

import time

import httpx

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through
from tests.services.postgres import start_postgres, stop_postgres


def test_database_down_gives_503(gateway_factory, oidc, orthanc):
    own = start_postgres()  # a cluster of its own: stopping it must not disturb other tests
    try:
        gw = gateway_factory({"database_url": own.url, "database_password": own.password,
                              "pacs_url": orthanc.dicomweb_url, "access_cache_seconds": 1.0})
        token = oidc.token_for("dw-db-down", email="dw-db-down@example.org")
        client = httpx.Client(base_url=gw + "/api", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        study = make_study(series=("CT",), instances_per_series=1)
        assert stow_through(client, study).status_code == 200
        before = set(httpx.get(orthanc.base_url + "/instances").json())
        own.stop()
        time.sleep(1.5)  # past the access-decision cache
        for method, path in (("GET", "/studies"), ("GET", f"/studies/{study.study_uid}/metadata"),
                             ("GET", f"/studies/{study.study_uid}/series/{study.series[0].series_uid}")):
            r = client.request(method, path)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json() == {"error": "database unavailable"}
        r = stow_through(client, make_study(series=("CT",), instances_per_series=1))
        assert r.status_code == 503
        assert set(httpx.get(orthanc.base_url + "/instances").json()) == before  # nothing stored blindly
        own.start()
        deadline = time.monotonic() + 30
        while client.get(f"/studies/{study.study_uid}/metadata").status_code != 200:
            assert time.monotonic() < deadline, "no recovery after the database came back"
            time.sleep(0.5)
    finally:
        stop_postgres(own)
