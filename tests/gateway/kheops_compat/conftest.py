"""Shared fixtures of the KHEOPS compatibility suite (generic and additive: each file adds its own helpers).

- ``FORM``: the Content-Type KHEOPS clients send with their bodies.
- ``ui_body(pairs)``: a body joined as the KHEOPS UI writes it (``key=value&...``, values as given: the UI
  pre-encodes some of them and leaves others, spaces included, raw).
- ``compat_user(label)``: a registered user whose ``client`` talks to the DICOMweb gateway ``dw``.
- ``compat_study(user, **kw)``: a fresh generated study STOWed into ``user``'s inbox through ``dw``.
"""

from __future__ import annotations

import pytest

from tests.data.dicomgen import GeneratedStudy, make_study
from tests.gateway.dicomweb.conftest import stow_through, users_on

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def ui_body(pairs) -> str:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return "&".join(f"{k}={v}" for k, v in items)


@pytest.fixture
def compat_user(make_user, api, dw):
    return lambda label="user": users_on(dw, make_user, api, label)[0]


@pytest.fixture
def compat_study():
    def upload(user, **kw) -> GeneratedStudy:
        study = make_study(**kw)
        r = stow_through(user.client, study)
        assert r.status_code == 200, r.text
        return study

    return upload
