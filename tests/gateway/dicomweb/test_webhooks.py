"""Album webhooks through the real gateway, real Orthanc and real PostgreSQL, delivered to a real HTTP receiver on
loopback (allowed for these gateways through KHEOPS_GW_WEBHOOK_ALLOWED_NETWORKS; the default refuses it).

Every replica sharing a database delivers that database's outbox, so each gateway here has a database of its own:
the session's other gateways (other settings) must not deliver these tests' webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from collections import deque
from urllib.parse import urlencode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through, users_on
from tests.gateway.dicomweb.helpers import capability

SECRET = "a-shared-secret-of-32-characters"


class Receiver:
    """Records every POST; answers with the queued statuses, then 200."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.received: list[dict] = []
        self.statuses: deque[int] = deque()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.statuses.popleft() if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Set-Cookie", "tracker=1")  # the gateway must not keep it
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, seconds: float = 15) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} deliveries, expected {count}"
            time.sleep(0.05)
        return self.received


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def own_database(pg) -> str:
    return pg.service.create_database(f"webhooks_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def hookgw(gateway_factory, orthanc, pg):
    return gateway_factory({"pacs_url": orthanc.dicomweb_url, "access_cache_seconds": 2.0,
                            "webhook_allowed_networks": "127.0.0.1/32", "webhook_retry_seconds": 0.2,
                            "webhook_max_attempts": 3, "database_url": own_database(pg)})


def conninfo_of(gateway) -> str:
    return f"{gateway.settings.database_url}?password={gateway.settings.database_password}"


@pytest.fixture
def hookuser(make_user, api, hookgw):
    return lambda label: users_on(hookgw, make_user, api, label)[0]


def album_of(user) -> str:
    r = user.client.post("/albums", data={"name": "Hooks"})
    assert r.status_code == 201
    return r.json()["album_id"]


ALL_EVENTS = ("new_series", "new_user", "remove_series", "delete_album")


def add_hook(user, album: str, url: str, events=ALL_EVENTS, **form):
    """KHEOPS's create form: one ``event`` field per event."""
    fields = [("name", "pipeline"), ("url", url), ("secret", SECRET), *[("event", e) for e in events],
              *form.items()]
    return user.client.post(f"/albums/{album}/webhooks", content=urlencode(fields),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})


def triggers(user, album: str, hook: str) -> list[dict]:
    return user.client.get(f"/albums/{album}/webhooks/{hook}").json().get("triggers", [])


def wait_trigger(user, album: str, hook: str, status: str) -> dict:
    deadline = time.monotonic() + 10
    while not (t := triggers(user, album, hook)) or t[0]["status"] != status:
        assert time.monotonic() < deadline, t
        time.sleep(0.1)
    return t[0]


def verified(delivery: dict, event: str | None = None) -> dict:
    """The payload, after checking the signatures the way receivers do: KHEOPS's (hex HMAC-SHA256 of the body)
    and ours (over ``<timestamp>.<body>``)."""
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    expected = hmac.new(SECRET.encode(), delivery["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-kheops-signature"], expected)
    signed = headers["x-kheops-timestamp"].encode() + b"." + delivery["body"]
    timestamped = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-kheops-timestamp-signature"], timestamped)
    assert abs(int(headers["x-kheops-timestamp"]) - time.time()) < 60
    assert headers["content-type"] == "application/json"
    if event is not None:
        assert headers["x-kheops-event"] == event
    payload = json.loads(delivery["body"])
    assert payload["host"] == "http://127.0.0.1" and payload["event_time"]  # the gateway's root_url here
    return payload


def test_admins_manage_webhooks_and_the_secret_is_never_shown(hookuser, api, hookgw, receiver):
    alice, bob, carol = hookuser("alice"), hookuser("bob"), hookuser("carol")
    album = album_of(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    r = add_hook(alice, album, receiver.url, events=("new_series",))
    assert r.status_code == 201, r.text
    hook = r.json()
    assert SECRET not in r.text and "secret" not in hook
    assert hook == {"id": hook["id"], "url": receiver.url, "name": "pipeline", "use_secret": True,
                    "events": ["new_series"], "enabled": True, "number_of_triggers": 0}
    assert r.headers["Location"] == f"/api/albums/{album}/webhooks/{hook['id']}"
    listed = alice.client.get(f"/albums/{album}/webhooks")
    assert [h["id"] for h in listed.json()] == [hook["id"]] and SECRET not in listed.text
    changed = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}",
                                 data={"event": ["new_user", "delete_album"], "enabled": "false"})
    assert changed.status_code == 200 and changed.json()["events"] == ["new_user", "delete_album"]
    assert changed.json()["enabled"] is False
    changed = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}",
                                 data={"add_event": "remove_series", "remove_event": "delete_album"})
    assert changed.json()["events"] == ["remove_series", "new_user"]
    both = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}", data={"event": "new_user",
                                                                             "add_event": "new_series"})
    assert both.status_code == 400
    assert alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}",
                              data={"add_event": "new_study"}).status_code == 400
    # the secret: removed with an empty value (use_secret false), set again
    edit = f"/albums/{album}/webhooks/{hook['id']}"
    assert alice.client.patch(edit, data={"secret": ""}).json()["use_secret"] is False
    assert alice.client.patch(edit, data={"secret": SECRET}).json()["use_secret"] is True
    # who may: admins only (a member gets 403, an outsider 404), with their own token; not on an inbox
    assert bob.client.get(f"/albums/{album}/webhooks").status_code == 403
    assert add_hook(bob, album, receiver.url).status_code == 403
    assert carol.client.get(f"/albums/{album}/webhooks").status_code == 404
    with psycopg.connect(conninfo_of(hookgw)) as conn:
        inbox = conn.execute("SELECT inbox_id FROM users WHERE sub = %s", (alice.sub,)).fetchone()[0]
    assert add_hook(alice, inbox, receiver.url).status_code == 404
    token = capability(alice, read=True, write=True)
    assert api(token, base_url=hookgw).get(f"/albums/{album}/webhooks").status_code == 403
    # what is refused, with 400
    for url in ("ftp://example.org/x", "http://user:pw@example.org/x", "http:///nohost", "http://10.1.2.3/x",
                "http://169.254.169.254/latest/meta-data", "not a url"):
        assert add_hook(alice, album, url).status_code == 400, url
    assert alice.client.post(f"/albums/{album}/webhooks", data={"name": "x", "url": receiver.url, "event": "new_user",
                                                                "secret": "s" * 1025}).status_code == 400
    assert add_hook(alice, album, receiver.url, events=("new_study",)).status_code == 400
    assert add_hook(alice, album, "http://example.org/" + "x" * 1024).status_code == 400  # KHEOPS: url <= 1024
    assert alice.client.delete(f"/albums/{album}/webhooks/{hook['id']}").status_code == 204
    assert alice.client.get(f"/albums/{album}/webhooks/{hook['id']}").status_code == 404
    mutations = [e["mutation_type"] for e in alice.client.get(f"/albums/{album}/events").json()]
    assert {"CREATE_WEBHOOK", "EDIT_WEBHOOK", "DELETE_WEBHOOK"} <= set(mutations)
    assert receiver.received == []  # nothing happened that the hook wanted


def test_every_event_is_delivered_signed(hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    hook = add_hook(alice, album, receiver.url).json()
    study = make_study(series=("CT", "MR"), instances_per_series=2)
    assert stow_through(alice.client, study, album=album).status_code == 200
    new_series = verified(receiver.wait_for(1)[0], "new_series")
    assert new_series["album_id"] == album and new_series["is_manual_trigger"] is False
    assert new_series["import_source"] == "upload"
    assert new_series["source"] == {"sub": alice.sub, "email": alice.email, "name": new_series["source"]["name"],
                                    "is_admin": True}
    updated = new_series["updated_study"]
    assert updated["study_uid"] == study.study_uid and updated["patient_ID"] == study.patient_id
    assert updated["retrieve_url"] == f"http://127.0.0.1/api/studies/{study.study_uid}"
    assert sorted(s["series_uid"] for s in updated["series"]) == sorted(s.series_uid for s in study.series)
    for s in updated["series"]:
        assert s["number_of_series_related_instances"] == 2 and s["number_of_new_instances"] == 2
        assert s["retrieve_url"] == f"http://127.0.0.1/api/studies/{study.study_uid}/series/{s['series_uid']}"

    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    new_user = verified(receiver.wait_for(2)[1], "new_user")
    assert new_user["new_user"]["sub"] == bob.sub and new_user["new_user"]["is_admin"] is False

    gone = study.series[0].series_uid
    assert alice.client.delete(f"/studies/{study.study_uid}/series/{gone}/albums/{album}").status_code == 204
    removed = verified(receiver.wait_for(3)[2], "remove_series")
    assert removed["remove_all_series"] is False
    assert [s["series_uid"] for s in removed["removed_study"]["series"]] == [gone]
    assert "retrieve_url" in removed["removed_study"]  # part of the study stays in the album
    assert all("retrieve_url" not in s for s in removed["removed_study"]["series"])

    assert alice.client.delete(f"/albums/{album}").status_code == 204
    deleted = verified(receiver.wait_for(4)[3], "delete_album")
    assert set(deleted) == {"host", "album_id", "event_time", "source", "is_manual_trigger"}
    ids = [d["headers"]["X-Kheops-Delivery"] for d in receiver.received]
    assert len(set(ids)) == 4
    assert hook["id"]


def test_failures_are_retried_then_given_up(hookuser, receiver):
    alice, bob, carol = hookuser("alice"), hookuser("bob"), hookuser("carol")
    album = album_of(alice)
    hook = add_hook(alice, album, receiver.url, events=("new_user",)).json()
    receiver.statuses.extend([503, 500])  # two failures, then 200
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    deliveries = receiver.wait_for(3)
    assert len({d["headers"]["X-Kheops-Delivery"] for d in deliveries}) == 1  # the same delivery, retried
    assert [d["headers"]["X-Kheops-Attempt"] for d in deliveries] == ["1/3", "2/3", "3/3"]
    assert len({d["body"] for d in deliveries}) == 1  # the same body every time
    assert all("Cookie" not in d["headers"] for d in deliveries)  # the receiver's cookie was not kept
    t = wait_trigger(alice, album, hook["id"], "delivered")
    assert [(a["attempt"], a["status"]) for a in t["attempts"]] == [(3, 200), (2, 500), (1, 503)]
    assert t["event"] == "new_user" and t["user"]["sub"] == bob.sub and t["is_manual_trigger"] is False
    assert t["id"] == deliveries[0]["headers"]["X-Kheops-Delivery"]
    # always failing: given up after webhook_max_attempts (3 here)
    receiver.statuses.extend([500] * 10)
    assert alice.client.put(f"/albums/{album}/users/{carol.sub}").status_code == 201
    receiver.wait_for(6)
    t = wait_trigger(alice, album, hook["id"], "failed")
    assert [a["status"] for a in t["attempts"]] == [500, 500, 500] and t["last_error"] == "HTTP 500"
    listed = alice.client.get(f"/albums/{album}/webhooks").json()[0]
    assert listed["number_of_triggers"] == 2
    assert listed["last_triggers"] == [{"id": t["id"], "status": "fail"},
                                       {"id": deliveries[0]["headers"]["X-Kheops-Delivery"], "status": "pass"}]
    time.sleep(1)
    assert len(receiver.received) == 6  # no fourth attempt


def test_disabled_hooks_and_other_events_send_nothing(hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    add_hook(alice, album, receiver.url, enabled="false")
    add_hook(alice, album, receiver.url, events=("delete_album",))
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    time.sleep(1.5)
    assert receiver.received == []


def test_a_name_that_resolves_to_a_private_address_is_not_called(gateway_factory, orthanc, make_user, api, receiver,
                                                                   pg):
    """The default policy (no allowed networks): loopback is refused at delivery even behind a host name."""
    gw = gateway_factory({"pacs_url": orthanc.dicomweb_url, "webhook_retry_seconds": 0.2,
                          "database_url": own_database(pg)})
    alice, bob = users_on(gw, make_user, api, "alice", "bob")
    album = album_of(alice)
    assert add_hook(alice, album, receiver.url).status_code == 400  # a literal 127.0.0.1: refused at once
    hook = add_hook(alice, album, receiver.url.replace("127.0.0.1", "localhost"), events=("new_user",)).json()
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    t = wait_trigger(alice, album, hook["id"], "failed")
    assert t["last_error"] == "destination not allowed"
    assert [(a["attempt"], a["status"]) for a in t["attempts"]] == [(1, -1)]  # -1: nothing answered
    assert receiver.received == []


def test_pinned_targets_keep_the_name_and_check_every_address():
    """The connection goes to the address that was checked; the name stays in Host and in the TLS name."""
    from kheopsctl.gateway.webhooks import PermanentFailure, Unresolved, parse_networks, pinned_targets

    loopback = parse_networks("127.0.0.0/8,::1/128")

    async def go():
        plain = await pinned_targets("http://localhost:8123/hook?x=1", loopback)
        tls = await pinned_targets("https://localhost/hook", loopback)
        with pytest.raises(PermanentFailure):
            await pinned_targets("http://localhost:8123/hook", parse_networks(""))
        with pytest.raises(Unresolved):
            await pinned_targets("http://no-such-host.invalid/hook", loopback)
        return plain, tls

    plain, tls = asyncio.run(go())
    assert ("http://127.0.0.1:8123/hook?x=1", {"Host": "localhost:8123"}, {}) in plain
    assert all(url.startswith(("http://127.", "http://[::1]")) for url, _, _ in plain)
    assert ("https://127.0.0.1:443/hook", {"Host": "localhost"}, {"sni_hostname": "localhost"}) in tls


def test_https_delivery_to_a_name_verifies_its_certificate(gateway_factory, orthanc, make_user, api, pg, tmp_path):
    """https://localhost/...: connected at the checked address, certificate verified for the name (SNI)."""
    from tests.secure.pki import issue

    root = issue("webhook test root", ca=True)
    leaf = issue("localhost", root, names=["localhost"])
    (tmp_path / "cert.pem").write_bytes(leaf.pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "root.pem").write_bytes(root.pem)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    receiver = Receiver(server_tls)
    try:
        gw = gateway_factory({"pacs_url": orthanc.dicomweb_url, "webhook_allowed_networks": "127.0.0.0/8,::1/128",
                              "webhook_retry_seconds": 0.2, "ca_bundle": str(tmp_path / "root.pem"),
                              "database_url": own_database(pg)})
        alice, bob = users_on(gw, make_user, api, "alice", "bob")
        album = album_of(alice)
        url = receiver.url.replace("127.0.0.1", "localhost")
        assert add_hook(alice, album, url, events=("new_user",)).status_code == 201
        assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
        delivery = receiver.wait_for(1)[0]
        assert verified(delivery, "new_user")["new_user"]["sub"] == bob.sub
        assert delivery["headers"]["Host"] == url.split("/")[2]
    finally:
        receiver.server.shutdown()


def test_finished_deliveries_are_kept_30_days(hookgw, hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    hook = add_hook(alice, album, receiver.url, events=("new_user",)).json()
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    receiver.wait_for(1)
    with psycopg.connect(conninfo_of(hookgw)) as conn:
        deadline = time.monotonic() + 10
        while conn.execute("SELECT status FROM webhook_deliveries WHERE webhook_id = %s",
                           (hook["id"],)).fetchone()[0] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # the same finished delivery twice more: one 31 days old, one 29 days old
        for days in (31, 29):
            conn.execute("INSERT INTO webhook_deliveries (webhook_id, album_id, url, secret, event, payload, status,"
                         " done_time) SELECT webhook_id, album_id, url, secret, event, payload, status,"
                         " now() - make_interval(days => %s) FROM webhook_deliveries WHERE webhook_id = %s LIMIT 1",
                         (days, hook["id"]))
        conn.commit()
        hookgw.app.state.webhooks.next_prune = 0.0  # the hourly clean-up, now
        deadline = time.monotonic() + 10
        while conn.execute("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s",
                           (hook["id"],)).fetchone()[0] != 2:
            assert time.monotonic() < deadline, "the 31-day-old delivery was not deleted"
            time.sleep(0.1)
        ages = conn.execute("SELECT extract(day FROM now() - done_time)::int FROM webhook_deliveries"
                            " WHERE webhook_id = %s ORDER BY done_time", (hook["id"],)).fetchall()
        assert [a[0] for a in ages] == [29, 0]


def test_an_admin_can_send_a_study_again_to_one_webhook(hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    hook = add_hook(alice, album, receiver.url, events=("delete_album",)).json()  # manual sends ignore the events
    other = add_hook(alice, album, receiver.url + "/other", events=("new_series",)).json()
    study = make_study(series=("CT", "MR"), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    receiver.wait_for(1)  # the automatic new_series, to the other hook
    trigger = f"/albums/{album}/webhooks/{hook['id']}/trigger"
    chosen = study.series[1].series_uid
    form = urlencode([("event", "new_series"), ("StudyInstanceUID", study.study_uid), ("SeriesInstanceUID", chosen)])
    r = alice.client.post(trigger, content=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 202 and r.content == b""
    manual = receiver.wait_for(2)[1]
    assert manual["path"] == "/hook"  # this webhook only
    payload = verified(manual, "new_series")
    assert payload["is_manual_trigger"] is True and payload["import_source"] == "send"
    assert [s["series_uid"] for s in payload["updated_study"]["series"]] == [chosen]
    assert payload["source"]["sub"] == alice.sub and payload["source"]["is_admin"] is True
    t = wait_trigger(alice, album, hook["id"], "delivered")
    assert t["is_manual_trigger"] is True and t["study"]["study_uid"] == study.study_uid
    assert [s["series_uid"] for s in t["study"]["series"]] == [chosen]
    # new_user: a member, by sub or email
    assert alice.client.post(trigger, data={"event": "new_user", "user": bob.email}).status_code == 202
    assert verified(receiver.wait_for(3)[2], "new_user")["new_user"]["sub"] == bob.sub
    # this gateway's older form: the study alone, all its series in the album
    assert alice.client.post(trigger, data={"StudyInstanceUID": study.study_uid}).status_code == 202
    older = verified(receiver.wait_for(4)[3], "new_series")
    assert sorted(s["series_uid"] for s in older["updated_study"]["series"]) == sorted(
        s.series_uid for s in study.series)
    # refused: KHEOPS's 400s and 404s, members who are not admins
    for bad in ({"event": "new_series", "StudyInstanceUID": study.study_uid},  # no series
                {"event": "new_user"}, {"event": "remove_series", "StudyInstanceUID": study.study_uid},
                {"event": "new_user", "user": bob.sub, "StudyInstanceUID": study.study_uid}, {},
                {"StudyInstanceUID": "x"}):
        assert alice.client.post(trigger, data=bad).status_code == 400, bad
    assert alice.client.post(trigger, data={"StudyInstanceUID": "1.2.3.4"}).status_code == 404
    assert alice.client.post(trigger, data={"event": "new_series", "StudyInstanceUID": study.study_uid,
                                            "SeriesInstanceUID": "1.2.3.4"}).status_code == 404
    assert alice.client.post(trigger, data={"event": "new_user", "user": "nobody@example.org"}).status_code == 404
    assert bob.client.post(trigger, data={"StudyInstanceUID": study.study_uid}).status_code == 403
    # as KHEOPS, a disabled webhook can still be triggered by hand
    assert alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}", data={"enabled": "false"}).status_code == 200
    assert alice.client.post(trigger, data={"event": "new_user", "user": bob.sub}).status_code == 202
    receiver.wait_for(5)
    assert "TRIGGER_WEBHOOK" in [e["mutation_type"] for e in alice.client.get(f"/albums/{album}/events").json()]
    time.sleep(0.5)
    assert len(receiver.received) == 5 and other["id"]


def test_a_webhook_without_secret_is_delivered_unsigned(hookuser, receiver):
    """KHEOPS: the secret is optional; without one, no signature header at all."""
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    r = alice.client.post(f"/albums/{album}/webhooks", content=urlencode(
        [("name", "open"), ("url", receiver.url), ("event", "new_user")]),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201 and r.json()["use_secret"] is False
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    delivery = receiver.wait_for(1)[0]
    headers = {k.lower() for k in delivery["headers"]}
    assert not headers & {"x-kheops-signature", "x-kheops-timestamp", "x-kheops-timestamp-signature"}
    assert json.loads(delivery["body"])["new_user"]["sub"] == bob.sub


def test_a_change_made_with_an_album_token_names_the_token(hookuser, receiver, api, hookgw):
    """KHEOPS's source carries capability_token {id, title} when a token made the change."""
    alice = hookuser("alice")
    album = album_of(alice)
    add_hook(alice, album, receiver.url, events=("new_series",))
    token = capability(alice, scope_type="album", album=album, read=True, write=True)
    study = make_study(series=("CT",), instances_per_series=1)
    assert stow_through(api(token, base_url=hookgw), study, album=album).status_code == 200
    source = verified(receiver.wait_for(1)[0], "new_series")["source"]
    assert source["sub"] == alice.sub and source["capability_token"]["title"] == "test token"
    listed = alice.client.get("/capabilities").json()
    assert source["capability_token"]["id"] in [c["id"] for c in listed]
