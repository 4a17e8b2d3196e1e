"""The gateway starts against a real database, migrates it, answers health checks and authenticates."""

import httpx
import psycopg


def test_health_and_schema(gateway, pg):
    assert httpx.get(gateway + "/health/live").json() == {"status": "ok"}
    ready = httpx.get(gateway + "/health/ready")
    assert ready.json()["checks"]["database"] == "ok"
    with psycopg.connect(pg) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions[0] == "0001_initial"


def test_first_use_creates_user_and_inbox(make_user, pg):
    alice = make_user("alice")
    r = alice.client.get("/inboxinfo")
    assert r.status_code == 200, r.text
    assert r.json() == {"number_of_studies": 0, "number_of_series": 0, "number_of_instances": 0, "modalities": []}
    with psycopg.connect(pg) as conn:
        row = conn.execute(
            "SELECT u.email, a.is_inbox, a.add_user, a.write_comments, a.delete_series FROM users u"
            " JOIN albums a ON a.id = u.inbox_id WHERE u.sub = %s", (alice.sub,)).fetchone()
    assert row == (alice.email, True, False, False, True)


def test_no_token_is_401(api):
    r = api().get("/albums")
    assert r.status_code == 401
    assert r.json() == {"error": "authentication required"}
    assert r.headers["www-authenticate"].startswith("Bearer")
