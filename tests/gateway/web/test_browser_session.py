"""The web application in a real Chromium, logging in through Keycloak's real login page (no shortcut): the
inbox after an upload through the upload page, the session's storage, logout ending both sessions, and the
cross-origin attacks (a CSRF form from another origin, the session cookie replayed with another Origin)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
from playwright.sync_api import expect

from tests.data.dicomgen import make_study
from tests.gateway.web.conftest import bearer

SESSION_COOKIE = "kheops-session"  # the plain-http name: the test site is http://127.0.0.1:<port>


def _session_rows(pg, sub: str) -> int:
    with psycopg.connect(pg) as conn:
        return conn.execute("SELECT count(*) FROM web_sessions WHERE user_sub = %s", (sub,)).fetchone()[0]


def _write_study(tmp_path, study) -> list[str]:
    folder = tmp_path / "study"
    folder.mkdir()
    paths = []
    for s_index, series in enumerate(study.series):
        for i, (_, data) in enumerate(series.instances):
            path = folder / f"s{s_index}-i{i}.dcm"
            path.write_bytes(data)
            paths.append(str(path))
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (folder / "notes.txt").write_text("not DICOM")
    return paths + [str(folder / "DICOMDIR"), str(folder / "notes.txt")]


def test_login_upload_inbox_storage_logout(web_site, browser, new_user, login, pg, tmp_path, artefacts):
    alice = new_user("alice")
    context = browser.new_context()
    page = context.new_page()
    # anonymous: the sign-in page at the address asked for, with the site's strict CSP
    reply = page.goto(web_site.root + "/")
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    page.screenshot(path=str(artefacts / "signin.png"))
    page.click("#login")
    assert page.url.startswith(web_site.keycloak.issuer + "/protocol/openid-connect/auth")
    page.screenshot(path=str(artefacts / "keycloak-login.png"))
    from tests.gateway.web.conftest import keycloak_login

    keycloak_login(page, alice)
    page.wait_for_url(web_site.root + "/")
    assert alice.email in page.text_content("#account-email")
    assert _session_rows(pg, alice.id) == 1

    # the session cookie: HttpOnly, SameSite=Lax, host-only, and no token anywhere JavaScript can read
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies[SESSION_COOKIE]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/"
    assert not session["domain"].startswith(".")
    storage = page.evaluate("() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
                            " document.cookie])")
    local, session_storage, visible_cookies = json.loads(storage)
    assert local == [] and session_storage == [], storage
    assert SESSION_COOKIE not in visible_cookies and "eyJ" not in storage
    assert "eyJ" not in page.content()  # no JWT in the page either

    # upload a two-series study (plus a DICOMDIR and a text file, both skipped) through the upload page
    study = make_study(series=("CT", "MR"), instances_per_series=3, patient_name="Webtest^Alice",
                       study_description="Browser upload")
    page.click("nav a[href='/upload']")
    page.wait_for_selector("body[data-ready='true']")
    page.set_input_files("#files", _write_study(tmp_path, study))
    page.click("#start")
    page.wait_for_selector("#summary[data-done='true']", timeout=60000)
    assert "6 stored, 0 failed, 2 skipped of 8 files" in page.inner_text("#summary")
    errors = page.inner_text("#file-errors")
    assert "DICOMDIR: skipped: DICOMDIR" in errors and "notes.txt: skipped: not a DICOM file" in errors
    page.screenshot(path=str(artefacts / "upload.png"))

    # the inbox: the KHEOPS columns with the right counts; the row expands into its two series
    page.click("nav a[href='/']")
    row = page.locator(f"tr.study[data-uid='{study.study_uid}']")
    row.wait_for()
    assert row.locator(".name").inner_text() == "Webtest Alice"
    assert row.locator(".modalities").inner_text() == "CT, MR"
    assert row.locator(".counts").inner_text() == "2 / 6"
    assert study.patient_id in row.inner_text()
    row.locator("button.expand").click()
    series = page.locator("li.series-item")
    series.nth(1).wait_for()
    assert series.count() == 2
    assert sorted(series.locator(".series-count").all_inner_texts()) == ["3 instances", "3 instances"]
    page.wait_for_function("() => [...document.querySelectorAll('li.series-item img')].every(i => i.complete"
                           " && i.naturalWidth > 0)")
    page.screenshot(path=str(artefacts / "inbox.png"))

    # a filter that does not match empties the list; the page's own requests keep working on the session
    page.fill("input[name=PatientName]", "nobody-like-this")
    page.click("#filters button[type=submit]")
    expect(page.locator("#status")).to_have_text("No study matches.")
    assert page.locator("tr.study").count() == 0

    # logout: the server-side session and Keycloak's session both end, the old cookie is worth nothing
    page.click("#account-menu summary")
    page.click("#logout")
    try:
        page.wait_for_url(web_site.root + "/", timeout=15000)
    except Exception:
        raise AssertionError(f"logout ended on {page.url}: {page.inner_text('body')[:500]}") from None
    page.wait_for_selector("#login")
    assert _session_rows(pg, alice.id) == 0
    assert web_site.keycloak.admin("GET", f"/users/{alice.id}/sessions").json() == []
    replay = httpx.get(web_site.root + "/api/studies", params={"inbox": "true"},
                       cookies={SESSION_COOKIE: session["value"]})
    assert replay.status_code == 401
    # logging in again needs the password again (Keycloak's SSO cookie went with its session)
    page.click("#login")
    page.wait_for_selector("#username")
    context.close()


class _Attacker(BaseHTTPRequestHandler):
    """Pages of another origin (same host, other port: same-site, so the Lax cookie IS sent along)."""
    target = ""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = (f"<!doctype html><form id=f method=post action='{self.target}/api/albums'>"
                "<input name=name value=pwned-by-csrf></form>"
                "<script>document.getElementById('f').submit()</script>").encode()
        if self.path.startswith("/fetch"):
            body = ("<!doctype html><script>"
                    f"fetch('{self.target}/api/albums', {{method: 'POST', credentials: 'include', mode: 'no-cors',"
                    " headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'name=pwned-by-fetch'})"
                    ".then(() => document.title = 'sent', () => document.title = 'sent')</script>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_csrf_and_cross_origin_cookie_replay_fail(web_site, browser, new_user, login):
    mallory_site = ThreadingHTTPServer(("127.0.0.1", 0), type("A", (_Attacker,), {"target": web_site.root}))
    threading.Thread(target=mallory_site.serve_forever, daemon=True).start()
    evil = f"http://127.0.0.1:{mallory_site.server_address[1]}"
    bob = new_user("bob")
    context = browser.new_context()
    try:
        page = login(context, bob)
        cookie = {c["name"]: c["value"] for c in context.cookies()}[SESSION_COOKIE]

        # a form posted from another origin: the cookie goes along (same site) but is not honoured
        with page.expect_response(lambda r: r.url.startswith(web_site.root + "/api/albums")) as answer:
            page.goto(evil + "/form")
        assert answer.value.status == 401
        # a no-cors fetch with credentials from another origin: same
        with page.expect_response(lambda r: r.url.startswith(web_site.root + "/api/albums")) as answer:
            page.goto(evil + "/fetch")
        assert answer.value.status == 401

        # same origin, but an unsafe method without the page's CSRF token: refused; with it: accepted
        page.goto(web_site.root + "/albums")
        no_token = page.evaluate("""() => fetch('/api/albums', {method: 'POST', body: new URLSearchParams({name:
            'no-csrf-token'})}).then(r => r.status)""")
        assert no_token == 403
        with_token = page.evaluate("""() => fetch('/api/albums', {method: 'POST', body: new URLSearchParams({name:
            'with-csrf-token'}), headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]')
            .content}}).then(r => r.status)""")
        assert with_token == 201

        names = [a["name"] for a in bearer(web_site, bob).get("/albums").json()]
        assert "with-csrf-token" in names
        assert not {"pwned-by-csrf", "pwned-by-fetch", "no-csrf-token"} & set(names), names

        # the cookie replayed outside the browser with another origin's headers: no access
        url = web_site.root + "/api/albums"
        for headers in ({"Origin": evil}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example"}):
            r = httpx.get(url, cookies={SESSION_COOKIE: cookie}, headers=headers)
            assert r.status_code == 401, (headers, r.status_code)
        # and an unsafe method with neither Origin nor Sec-Fetch-Site (not a browser of this site): no access
        r = httpx.post(web_site.root + "/api/albums", data={"name": "no-origin"}, cookies={SESSION_COOKIE: cookie})
        assert r.status_code == 401
        # control: the same cookie on a same-origin read works (it is the origin check that refused above)
        r = httpx.get(url, cookies={SESSION_COOKIE: cookie},
                      headers={"Sec-Fetch-Site": "same-origin", "Origin": web_site.root})
        assert r.status_code == 200 and "with-csrf-token" in [a["name"] for a in r.json()]

        # logout from another origin is refused too (POST, other Origin)
        r = httpx.post(web_site.root + "/logout", data={"csrf": "x"}, cookies={SESSION_COOKIE: cookie},
                       headers={"Origin": evil})
        assert r.status_code == 403
        assert httpx.get(url, cookies={SESSION_COOKIE: cookie}).status_code == 200
    finally:
        context.close()
        mallory_site.shutdown()
        mallory_site.server_close()
