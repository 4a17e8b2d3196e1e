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


def add_hook(user, album: str, url: str, events: str = "new_series,new_user,remove_series,delete_album", **form):
    return user.client.post(f"/albums/{album}/webhooks",
                            data={"name": "pipeline", "url": url, "secret": SECRET, "events": events, **form})


def verified(delivery: dict) -> dict:
    """The payload, after checking the signature the way a receiver must."""
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    signed = headers["x-kheops-timestamp"].encode() + b"." + delivery["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-kheops-signature"], expected)
    assert abs(int(headers["x-kheops-timestamp"]) - time.time()) < 60
    payload = json.loads(delivery["body"])
    assert payload["event"] == headers["x-kheops-event"] and headers["content-type"] == "application/json"
    return payload


def test_admins_manage_webhooks_and_the_secret_is_never_shown(hookuser, api, hookgw, receiver):
    alice, bob, carol = hookuser("alice"), hookuser("bob"), hookuser("carol")
    album = album_of(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    r = add_hook(alice, album, receiver.url, events="new_series")
    assert r.status_code == 201, r.text
    hook = r.json()
    assert SECRET not in r.text and "secret" not in hook
    assert hook["events"] == ["new_series"] and hook["enabled"] is True and hook["deliveries"] == []
    assert r.headers["Location"] == f"/api/albums/{album}/webhooks/{hook['id']}"
    listed = alice.client.get(f"/albums/{album}/webhooks")
    assert [h["id"] for h in listed.json()] == [hook["id"]] and SECRET not in listed.text
    changed = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}",
                                 data={"events": "new_user,delete_album", "enabled": "false"})
    assert changed.status_code == 200 and changed.json()["events"] == ["delete_album", "new_user"]
    assert changed.json()["enabled"] is False
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
    assert alice.client.post(f"/albums/{album}/webhooks", data={"name": "x", "url": receiver.url, "events": "new_user",
                                                                "secret": "short"}).status_code == 400
    assert add_hook(alice, album, receiver.url, events="new_study").status_code == 400
    assert alice.client.delete(f"/albums/{album}/webhooks/{hook['id']}").status_code == 204
    assert alice.client.get(f"/albums/{album}/webhooks/{hook['id']}").status_code == 404
    mutations = [e["mutation_type"] for e in alice.client.get(f"/albums/{album}/events").json()]
    assert {"CREATE_WEBHOOK", "EDIT_WEBHOOK", "DELETE_WEBHOOK"} <= set(mutations)
    assert receiver.received == []  # nothing happened that the hook wanted


def test_every_event_is_delivered_signed(hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    hook = add_hook(alice, album, receiver.url).json()
    study = make_study(series=("CT", "MR"), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    new_series = verified(receiver.wait_for(1)[0])
    assert new_series["event"] == "new_series" and new_series["album"] == album
    assert new_series["study"] == study.study_uid
    assert sorted(new_series["series"]) == sorted(s.series_uid for s in study.series)
    assert new_series["source"]["sub"] == alice.sub

    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    new_user = verified(receiver.wait_for(2)[1])
    assert new_user["event"] == "new_user" and new_user["user"]["sub"] == bob.sub

    gone = study.series[0].series_uid
    assert alice.client.delete(f"/studies/{study.study_uid}/series/{gone}/albums/{album}").status_code == 204
    removed = verified(receiver.wait_for(3)[2])
    assert removed["event"] == "remove_series" and removed["series"] == [gone]

    assert alice.client.delete(f"/albums/{album}").status_code == 204
    deleted = verified(receiver.wait_for(4)[3])
    assert deleted["event"] == "delete_album" and deleted["name"] == "Hooks"
    ids = [d["headers"]["X-Kheops-Delivery"] for d in receiver.received]
    assert len(set(ids)) == 4
    assert hook["id"]


def test_failures_are_retried_then_given_up(hookuser, receiver):
    alice, bob, carol = hookuser("alice"), hookuser("bob"), hookuser("carol")
    album = album_of(alice)
    hook = add_hook(alice, album, receiver.url, events="new_user").json()
    receiver.statuses.extend([503, 500])  # two failures, then 200
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    deliveries = receiver.wait_for(3)
    assert len({d["headers"]["X-Kheops-Delivery"] for d in deliveries}) == 1  # the same delivery, retried
    assert all("Cookie" not in d["headers"] for d in deliveries)  # the receiver's cookie was not kept
    deadline = time.monotonic() + 10
    while (d := alice.client.get(f"/albums/{album}/webhooks/{hook['id']}").json()["deliveries"][0])["status"] != "delivered":
        assert time.monotonic() < deadline, d
        time.sleep(0.1)
    assert d["attempts"] == 3 and d["last_status"] == 200
    # always failing: given up after webhook_max_attempts (3 here)
    receiver.statuses.extend([500] * 10)
    assert alice.client.put(f"/albums/{album}/users/{carol.sub}").status_code == 201
    receiver.wait_for(6)
    deadline = time.monotonic() + 10
    while (d := alice.client.get(f"/albums/{album}/webhooks/{hook['id']}").json()["deliveries"][0])["status"] != "failed":
        assert time.monotonic() < deadline, d
        time.sleep(0.1)
    assert d["attempts"] == 3 and d["last_status"] == 500 and d["last_error"] == "HTTP 500"
    time.sleep(1)
    assert len(receiver.received) == 6  # no fourth attempt


def test_disabled_hooks_and_other_events_send_nothing(hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    add_hook(alice, album, receiver.url, enabled="false")
    add_hook(alice, album, receiver.url, events="delete_album")
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
    hook = add_hook(alice, album, receiver.url.replace("127.0.0.1", "localhost"), events="new_user").json()
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    deadline = time.monotonic() + 10
    while not (d := alice.client.get(f"/albums/{album}/webhooks/{hook['id']}").json()["deliveries"]) \
            or d[0]["status"] != "failed":
        assert time.monotonic() < deadline, d
        time.sleep(0.1)
    assert d[0]["last_error"] == "destination not allowed" and d[0]["attempts"] == 1
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
        assert add_hook(alice, album, url, events="new_user").status_code == 201
        assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
        delivery = receiver.wait_for(1)[0]
        assert verified(delivery)["user"]["sub"] == bob.sub
        assert delivery["headers"]["Host"] == url.split("/")[2]
    finally:
        receiver.server.shutdown()


def test_finished_deliveries_are_kept_30_days(hookgw, hookuser, receiver):
    alice, bob = hookuser("alice"), hookuser("bob")
    album = album_of(alice)
    hook = add_hook(alice, album, receiver.url, events="new_user").json()
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
    hook = add_hook(alice, album, receiver.url, events="delete_album").json()  # manual sends ignore the events
    other = add_hook(alice, album, receiver.url + "/other", events="new_series").json()
    study = make_study(series=("CT", "MR"), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    receiver.wait_for(1)  # the automatic new_series, to the other hook
    r = alice.client.post(f"/albums/{album}/webhooks/{hook['id']}/trigger", data={"StudyInstanceUID": study.study_uid})
    assert r.status_code == 202 and len(r.json()["deliveries"]) == 1
    manual = receiver.wait_for(2)[1]
    assert manual["path"] == "/hook"  # this webhook only
    payload = verified(manual)
    assert payload["event"] == "new_series" and payload["manual"] is True and payload["study"] == study.study_uid
    assert sorted(payload["series"]) == sorted(s.series_uid for s in study.series)
    trigger = f"/albums/{album}/webhooks/{hook['id']}/trigger"
    assert alice.client.post(trigger, data={"StudyInstanceUID": "1.2.3.4"}).status_code == 404
    assert alice.client.post(trigger, data={"StudyInstanceUID": "x"}).status_code == 400
    assert bob.client.post(trigger, data={"StudyInstanceUID": study.study_uid}).status_code == 403
    assert alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}", data={"enabled": "false"}).status_code == 200
    assert alice.client.post(trigger, data={"StudyInstanceUID": study.study_uid}).status_code == 409
    assert "TRIGGER_WEBHOOK" in [e["mutation_type"] for e in alice.client.get(f"/albums/{album}/events").json()]
    time.sleep(0.5)
    assert len(receiver.received) == 2 and other["id"]
