"""Invariant: every route the gateway serves is in the adversarial route table (or listed as public by design),
and the table names no route the gateway no longer serves. A new route without an attack fails here.

The inventory is read from the real application's route table: ``create_app`` on the session's test
settings, never started.
"""

from __future__ import annotations

from kheopsctl.gateway.app import create_app
from tests.gateway.adversarial.conftest import (CREDENTIALS, PUBLIC, READERS, ROUTES, STRANGERS, WEB_FLOW, Attack,
                                                cases, route_inventory, slots)


def _inventory(dw):
    return route_inventory(create_app(dw.settings))


def test_every_route_is_in_the_table_and_no_entry_is_stale(dw):
    served = _inventory(dw)
    listed = set(ROUTES) | set(PUBLIC) | set(WEB_FLOW)
    assert not ROUTES.keys() & PUBLIC.keys(), "a route is both attacked and public"
    missing = sorted(served - listed)
    stale = sorted(listed - served)
    assert not missing, f"routes with no adversarial coverage (add them to ROUTES in conftest.py): {missing}"
    assert not stale, f"table entries for routes the app does not serve: {stale}"


def test_the_inventory_sees_both_route_families(dw):
    # the walk must descend into the /api Mount: REST and DICOMweb routes alike
    served = _inventory(dw)
    assert ("/api/albums/{album}", "DELETE") in served
    assert ("/api/studies/{study}/series/{series}/instances/{sop}/bulk/{rest:path}", "GET") in served
    assert ("/health/live", "GET") in served
    assert len(served) > 60


def test_every_entry_fills_every_path_slot_and_is_attacked_by_every_stranger(world):
    for (path, method), attacks in ROUTES.items():
        assert attacks, (path, method)
        for a in attacks:
            assert isinstance(a, Attack) and a.kind in ("read", "write", "download", "stow", "listing", "token")
            assert set(a.legit) <= set(READERS) | {"writeonly_token", "other_user"}, (path, a.name)
            assert not (a.only and a.legit), (path, a.name)
            for kind in CREDENTIALS:
                given = set(a.path(world, world.creds[kind]))
                assert given == set(slots(path)), (path, method, a.name, kind, given)
        # whatever the variants, each stranger attacks each route at least once
        attacked = {kind for key, a, kind in cases() if key == (path, method)}
        legit = set().union(*(a.legit for a in attacks))
        assert set(STRANGERS) <= attacked | legit, (path, method, set(STRANGERS) - attacked - legit)
