"""DICOMweb fixtures: a real Orthanc (Debian package, DICOMweb plugin) behind a real gateway, real PostgreSQL.

``dw`` is a gateway whose PACS is the session Orthanc; ``uploaded(user)`` STOWs a fresh generated study through
the gateway into that user's inbox and returns it.
"""

from __future__ import annotations

import httpx
import pytest

from tests.data.dicomgen import GeneratedStudy, make_study, multipart_related

# ``dw`` and ``orthanc`` live in tests/gateway/conftest.py, so that every package under tests/gateway shares them


def stow_through(client: httpx.Client, study: GeneratedStudy, album: str | None = None,
                 parts: list[bytes] | None = None, path: str = "/studies") -> httpx.Response:
    body, ct = multipart_related(parts if parts is not None else list(study.all_instances()))
    params = {"album": album} if album else None
    return client.post(path, content=body, headers={"Content-Type": ct, "Accept": "application/dicom+json"},
                       params=params)


@pytest.fixture
def uploaded(dw, api):
    def upload(user, **kw) -> GeneratedStudy:
        study = make_study(**kw)
        client = api(user.token, base_url=dw)
        r = stow_through(client, study)
        assert r.status_code == 200, r.text
        return study

    return upload


def users_on(gateway, make_user, api, *labels):
    """Fresh users whose ``client`` talks to ``gateway``, each already known to it."""
    users = []
    for label in labels:
        u = make_user(label, register=False)
        u.client = api(u.token, base_url=gateway)
        assert u.client.get("/inboxinfo").status_code == 200
        users.append(u)
    return users


@pytest.fixture
def dwuser(make_user, api, dw):
    """A registered user whose ``client`` talks to the DICOMweb gateway ``dw``."""
    return lambda label="user": users_on(dw, make_user, api, label)[0]
