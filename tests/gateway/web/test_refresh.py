"""Token refresh of web sessions, with the real Keycloak: short-lived access tokens are refreshed server-side,
concurrent requests of one page never spend the single-use refresh token twice (Keycloak's realm revokes
refresh tokens on use), and a Keycloak session ended elsewhere (an administrator) ends the web session."""

from __future__ import annotations

import psycopg


def _client(keycloak, client_id: str) -> tuple[str, dict]:
    found = keycloak.admin("GET", "/clients", params={"clientId": client_id}).json()[0]
    return found["id"], keycloak.admin("GET", f"/clients/{found['id']}").json()


def _session(pg, sub: str):
    with psycopg.connect(pg) as conn:
        return conn.execute("SELECT created, refreshed FROM web_sessions WHERE user_sub = %s", (sub,)).fetchone()


def test_refresh_under_concurrency_and_when_keycloak_ends_the_session(web_site, browser, new_user, login, pg):
    uuid_, rep = _client(web_site.keycloak, "kheops-web")
    before = dict(rep["attributes"])
    # 10 s access tokens: under the gateway's 30 s margin, every request of this test refreshes first
    rep["attributes"]["access.token.lifespan"] = "10"
    web_site.keycloak.admin("PUT", f"/clients/{uuid_}", json=rep)
    carol = new_user("carol")
    context = browser.new_context()
    try:
        page = login(context, carol, "/albums")
        statuses = page.evaluate("""() => Promise.all(Array.from({length: 8}, () =>
            fetch('/api/albums').then(r => r.status)))""")
        assert statuses == [200] * 8
        created, refreshed = _session(pg, carol.id)
        assert refreshed > created  # refreshed, and the session survived eight concurrent refreshes
        # also an unsafe method after a refresh keeps the same CSRF token
        status = page.evaluate("""() => fetch('/api/albums', {method: 'POST', body: new URLSearchParams({name:
            'after-refresh'}), headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]')
            .content}}).then(r => r.status)""")
        assert status == 201

        # an administrator ends carol's Keycloak sessions: the next refresh is refused, the web session ends
        web_site.keycloak.admin("POST", f"/users/{carol.id}/logout")
        assert page.evaluate("() => fetch('/api/albums').then(r => r.status)") == 401
        assert _session(pg, carol.id) is None
        page.goto(web_site.root + "/albums")
        page.wait_for_selector("#login")
    finally:
        context.close()
        # an attribute missing from the update is kept by Keycloak: put the old value back (empty: the realm's)
        rep["attributes"]["access.token.lifespan"] = before.get("access.token.lifespan", "")
        web_site.keycloak.admin("PUT", f"/clients/{uuid_}", json=rep)
