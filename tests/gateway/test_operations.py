"""Operations: metrics on their own port behind a token, readiness, 503 when the database is down, no
internals in error replies, and the public OpenAPI document matching the routes."""

from __future__ import annotations

import time

import httpx
import pytest

from kheopsctl.gateway.api import routes as rest_routes
from tests.gateway.server import free_port
from tests.services.postgres import start_postgres, stop_postgres


def test_metrics_on_separate_port_with_token(gateway_factory, make_user):
    gw = gateway_factory({"metrics_port": free_port(), "metrics_token": "metrics-secret"})
    user = make_user("metrics")
    assert httpx.get(gw + "/api/albums", headers={"Authorization": f"Bearer {user.token}"}).status_code == 200
    assert httpx.get(gw.metrics_url).status_code == 401
    assert httpx.get(gw.metrics_url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(gw.metrics_url, headers={"Authorization": "Bearer metrics-secret"})
    assert r.status_code == 200
    assert 'kheops_gateway_requests_total{method="GET",route="/api/albums",status="200"}' in r.text
    assert "kheops_gateway_auth_failures_total" in r.text or "kheops_gateway_request_seconds" in r.text
    # not on the public port
    assert httpx.get(gw + "/metrics").status_code == 404
    assert httpx.get(gw + "/api/metrics", headers={"Authorization": f"Bearer {user.token}"}).status_code == 404


def test_openapi_is_public_and_covers_every_route(gateway):
    r = httpx.get(gateway + "/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(route.path, method) for route in rest_routes() for method in route.methods
              if method != "HEAD" and route.path != "/openapi.json"}
    assert documented == served


def test_error_replies_are_json_without_internals(make_user):
    user = make_user("errors")
    r = user.client.get("/albums/x", params={"limit": "-1"})
    assert r.status_code == 404 and r.json() == {"error": "album not found"}
    r = user.client.request("PATCH", "/albums")
    assert r.status_code == 405 and "error" in r.json()
    r = user.client.get("/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_database_down_gives_503_then_recovers(gateway_factory, oidc):
    own = start_postgres()  # a cluster of its own: stopping it must not disturb other tests
    try:
        gw = gateway_factory({"database_url": own.url, "database_password": own.password})
        token = oidc.token_for("db-down-user", email="db-down@example.org")
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(gw + "/api/albums", headers=headers).status_code == 200
        own.stop()
        r = httpx.get(gw + "/api/albums", headers=headers, timeout=30)
        assert r.status_code == 503 and r.json() == {"error": "database unavailable"}
        r = httpx.get(gw + "/health/ready", timeout=30)
        assert r.status_code == 503 and r.json()["checks"]["database"] == "down"
        assert httpx.get(gw + "/health/live").status_code == 200
        own.start()
        deadline = time.monotonic() + 30
        while httpx.get(gw + "/api/albums", headers=headers, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not recover after the database came back"
            time.sleep(0.5)
        assert httpx.get(gw + "/health/ready").json()["checks"]["database"] == "ok"
    finally:
        stop_postgres(own)


def test_access_cache_above_10_seconds_is_refused():
    from kheopsctl.gateway.settings import from_env

    with pytest.raises(ValueError):
        from_env({"KHEOPS_GW_ACCESS_CACHE_SECONDS": "30"})


def test_hostile_input_gets_4xx_never_500(make_user):
    user = make_user("hostile")
    for path, params in [("/albums/%00", None), ("/users", {"reference": "a\x00b"}),
                         ("/albums", {"offset": "99999999999999999999"}), ("/capabilities/%00", None),
                         ("/albums/" + "x" * 5000, None)]:
        r = user.client.get(path, params=params)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert "error" in r.json()
    r = user.client.post("/albums", data={"name": "a\x00b"})
    assert r.status_code == 400
    r = user.client.post("/albums", content=b"x" * (70 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413
