"""Webhooks as KHEOPS clients use them (``WebhookResource``, ``WebhookResponse``, ``WebhookWriter``).

Each request is the one the KHEOPS UI sends (NewWebhook.vue, EditWebhook.vue, DetailAttempts.vue: urlencoded
bodies, one ``event`` / ``SeriesInstanceUID`` field per value, empty values left out); each reply is checked
for KHEOPS's status, field names and shapes. Deliveries go to a real HTTP receiver on loopback that does what a
KHEOPS receiver does: it recomputes ``X-Kheops-Signature`` (lowercase hex HMAC-SHA256 of the raw body under the
shared secret) and answers 401 when it does not match, so the attempts the gateway records say whether it did.

The gateway here has a database of its own (every replica on a database delivers its outbox) and allows
loopback destinations (the default refuses them; see tests/gateway/test_webhook_destinations.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.data.dicomgen import make_study
from tests.gateway.dicomweb.conftest import stow_through, users_on
from tests.gateway.kheops_compat.conftest import FORM, ui_body

SECRET = "kheops-receiver-secret"
WEBHOOK_KEYS = {"id", "url", "name", "use_secret", "events", "enabled", "number_of_triggers"}
ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class KheopsReceiver:
    """A webhook endpoint that verifies KHEOPS's signature before accepting a delivery."""

    def __init__(self, secret: str | None):
        self.received: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signature = self.headers.get("X-Kheops-Signature")
                good = secret is None or (signature is not None and hmac.compare_digest(
                    signature, hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()))
                outer.received.append({"headers": dict(self.headers), "body": body, "verified": good})
                self.send_response(200 if good else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/kheops-hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, seconds: float = 15) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} deliveries, expected {count}"
            time.sleep(0.05)
        return self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = KheopsReceiver(SECRET)
    yield r
    r.close()


@pytest.fixture(scope="module")
def hookgw(gateway_factory, orthanc, pg):
    database = pg.service.create_database(f"compat_hooks_{uuid.uuid4().hex[:12]}")
    return gateway_factory({"pacs_url": orthanc.dicomweb_url, "webhook_allowed_networks": "127.0.0.1/32",
                            "webhook_retry_seconds": 0.2, "webhook_max_attempts": 2, "database_url": database})


@pytest.fixture
def person(make_user, api, hookgw):
    return lambda label: users_on(hookgw, make_user, api, label)[0]


def new_album(user) -> str:
    r = user.client.post("/albums", content=ui_body({"name": "compat-hooks"}), headers=FORM)
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def create(user, album: str, url: str, *events, secret: str | None = SECRET, enabled: bool = True):
    """NewWebhook.vue's body: name, url, secret (left out when empty), one event per choice, enabled."""
    pairs = [("name", "compat"), ("url", url)] + ([("secret", secret)] if secret else [])
    pairs += [("event", e) for e in events] + [("enabled", "true" if enabled else "false")]
    return user.client.post(f"/albums/{album}/webhooks", content=ui_body(pairs), headers=FORM)


def detail(user, album: str, hook: str, **params) -> dict:
    r = user.client.get(f"/albums/{album}/webhooks/{hook}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def wait_attempts(user, album: str, hook: str, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(t := detail(user, album, hook).get("triggers", [])) < count or any("attempts" not in x for x in t):
        assert time.monotonic() < deadline, t
        time.sleep(0.1)
    return t


def body_of(delivery: dict) -> dict:
    assert delivery["verified"], "the receiver could not verify X-Kheops-Signature"
    return json.loads(delivery["body"])


def test_create_answers_201_with_kheops_webhook_object(person, receiver):
    alice = person("alice")
    album = new_album(alice)
    r = create(alice, album, receiver.url, "new_series", "new_user")
    assert r.status_code == 201, r.text
    hook = r.json()
    assert set(hook) == WEBHOOK_KEYS
    assert isinstance(hook["id"], str) and hook["url"] == receiver.url and hook["name"] == "compat"
    assert hook["use_secret"] is True and hook["enabled"] is True and hook["number_of_triggers"] == 0
    assert hook["events"] == ["new_series", "new_user"]
    # no secret field (the UI leaves an empty one out), disabled, no events at all: all accepted, as KHEOPS
    r = create(alice, album, receiver.url, secret=None, enabled=False)
    assert r.status_code == 201, r.text
    assert r.json()["use_secret"] is False and r.json()["enabled"] is False and r.json()["events"] == []
    # KHEOPS's list order of events, whatever the order given
    r = create(alice, album, receiver.url, "delete_album", "new_user", "remove_series", "new_series")
    assert r.json()["events"] == ["new_series", "remove_series", "new_user", "delete_album"]
    # 400s: an unknown event, a missing url or name, a scheme other than http(s)
    assert create(alice, album, receiver.url, "new_study").status_code == 400
    assert alice.client.post(f"/albums/{album}/webhooks", content="name=x&event=new_user",
                             headers=FORM).status_code == 400
    assert alice.client.post(f"/albums/{album}/webhooks", content=ui_body({"url": receiver.url}),
                             headers=FORM).status_code == 400
    assert create(alice, album, "ftp://example.org/x", "new_user").status_code == 400
    listed = alice.client.get(f"/albums/{album}/webhooks")
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "3"
    assert [set(h) for h in listed.json()] == [WEBHOOK_KEYS] * 3  # no triggers yet: no last_triggers
    assert receiver.received == []


def test_delivery_is_signed_as_kheops_receivers_verify_it(person, receiver):
    alice, bob = person("alice"), person("bob")
    album = new_album(alice)
    hook = create(alice, album, receiver.url, "new_series", "new_user", "remove_series").json()
    study = make_study(series=("CT", "MR"), instances_per_series=2, patient_name="Hook^Compat")
    assert stow_through(alice.client, study, album=album).status_code == 200
    delivery = receiver.wait_for(1)[0]
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    assert re.fullmatch(r"[0-9a-f]{64}", headers["x-kheops-signature"])  # lowercase hex
    assert headers["x-kheops-event"] == "new_series" and headers["x-kheops-attempt"] == "1/2"
    assert headers["x-kheops-delivery"] and headers["content-type"] == "application/json"
    event = body_of(delivery)
    assert set(event) == {"host", "album_id", "event_time", "source", "is_manual_trigger", "import_source",
                          "updated_study"}
    assert event["album_id"] == album and event["is_manual_trigger"] is False and event["import_source"] == "upload"
    assert set(event["source"]) == {"email", "name", "sub", "is_admin"} and event["source"]["sub"] == alice.sub
    study_json = event["updated_study"]
    assert {"study_uid", "patient_name", "patient_ID", "study_date", "retrieve_url", "series"} <= set(study_json)
    assert study_json["patient_name"] == "Hook^Compat" and study_json["study_date"] == study.study_date
    assert study_json["retrieve_url"] == f"{event['host']}/api/studies/{study.study_uid}"
    for s in study_json["series"]:
        assert {"series_uid", "modality", "number_of_series_related_instances", "series_number",
                "retrieve_url", "number_of_new_instances"} <= set(s)
        assert s["number_of_series_related_instances"] == 2 and isinstance(s["series_number"], int)

    # new_user: KHEOPS's new_user object
    assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
    event = body_of(receiver.wait_for(2)[1])
    assert set(event) == {"host", "album_id", "event_time", "source", "is_manual_trigger", "new_user"}
    assert event["new_user"]["sub"] == bob.sub and event["new_user"]["is_admin"] is False

    # remove_series of the whole study: remove_all_series, and no retrieve URL any more
    assert alice.client.delete(f"/studies/{study.study_uid}/albums/{album}").status_code == 204
    event = body_of(receiver.wait_for(3)[2])
    assert set(event) == {"host", "album_id", "event_time", "source", "is_manual_trigger", "remove_all_series",
                          "removed_study"}
    assert event["remove_all_series"] is True and "retrieve_url" not in event["removed_study"]
    assert sorted(s["series_uid"] for s in event["removed_study"]["series"]) == sorted(
        s.series_uid for s in study.series)

    # the attempts the gateway recorded: the receiver verified each signature (200)
    t = wait_attempts(alice, album, hook["id"], 3)
    assert [x["event"] for x in t] == ["remove_series", "new_user", "new_series"]  # newest first
    assert all(x["attempts"][0]["status"] == 200 for x in t)


def test_list_detail_patch_and_trigger_shapes(person, receiver):
    alice, bob = person("alice"), person("bob")
    album = new_album(alice)
    assert alice.client.put(f"/albums/{album}/users/{bob.email}").status_code == 201
    hook = create(alice, album, receiver.url, "new_series").json()
    study = make_study(series=("CT", "MR"), instances_per_series=1)
    assert stow_through(alice.client, study, album=album).status_code == 200
    receiver.wait_for(1)
    wait_attempts(alice, album, hook["id"])

    # list: KHEOPS's object plus last_triggers (id, pass|fail)
    listed = alice.client.get(f"/albums/{album}/webhooks")
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "1"
    item = listed.json()[0]
    assert set(item) == WEBHOOK_KEYS | {"last_triggers"} and item["number_of_triggers"] == 1
    assert [set(t) for t in item["last_triggers"]] == [{"id", "status"}]
    assert item["last_triggers"][0]["status"] == "pass"

    # detail: triggers with attempts and the study (UIDs and retrieve URLs)
    one = detail(alice, album, hook["id"])
    assert set(one) == WEBHOOK_KEYS | {"triggers"}
    trigger = one["triggers"][0]
    assert {"id", "is_manual_trigger", "event", "attempts", "study"} <= set(trigger)
    assert trigger["id"] == item["last_triggers"][0]["id"] and trigger["is_manual_trigger"] is False
    assert trigger["event"] == "new_series"
    assert [set(a) for a in trigger["attempts"]] == [{"status", "time", "attempt"}]
    assert trigger["attempts"][0]["status"] == 200 and trigger["attempts"][0]["attempt"] == 1
    assert ZONED.match(trigger["attempts"][0]["time"])
    assert trigger["study"]["study_uid"] == study.study_uid and trigger["study"]["retrieve_url"].endswith(
        f"/api/studies/{study.study_uid}")
    assert sorted(s["series_uid"] for s in trigger["study"]["series"]) == sorted(s.series_uid for s in study.series)
    assert all(s["retrieve_url"].endswith(s["series_uid"]) for s in trigger["study"]["series"])

    # the redeliver button (DetailAttempts.vue): its exact body, 202 and no content
    pairs = [("StudyInstanceUID", study.study_uid)] + [("SeriesInstanceUID", s.series_uid) for s in study.series]
    r = alice.client.post(f"/albums/{album}/webhooks/{hook['id']}/trigger",
                          content=ui_body(pairs + [("event", "new_series")]), headers=FORM)
    assert r.status_code == 202 and r.content == b""
    event = body_of(receiver.wait_for(2)[1])
    assert event["is_manual_trigger"] is True and event["import_source"] == "send"
    assert event["source"]["is_admin"] is True
    r = alice.client.post(f"/albums/{album}/webhooks/{hook['id']}/trigger",
                          content=ui_body({"user": bob.email, "event": "new_user"}), headers=FORM)
    assert r.status_code == 202
    event = body_of(receiver.wait_for(3)[2])
    assert event["is_manual_trigger"] is True and event["new_user"]["email"] == bob.email
    t = wait_attempts(alice, album, hook["id"], 3)
    assert t[0]["event"] == "new_user" and t[0]["is_manual_trigger"] is True
    assert set(t[0]["user"]) == {"email", "name", "sub"} and t[0]["user"]["sub"] == bob.sub
    # triggers are paged with limit / offset
    assert [x["id"] for x in detail(alice, album, hook["id"], limit=1, offset=1)["triggers"]] == [t[1]["id"]]

    # EditWebhook.vue's body (name, url, events, enabled), then add_event / remove_event
    r = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}", headers=FORM, content=ui_body(
        [("name", "renamed"), ("url", receiver.url), ("event", "new_series"), ("event", "remove_series"),
         ("enabled", "false")]))
    assert r.status_code == 200, r.text
    changed = r.json()
    assert set(changed) == WEBHOOK_KEYS | {"last_triggers"} and len(changed["last_triggers"]) == 3
    assert changed["name"] == "renamed" and changed["enabled"] is False
    assert changed["events"] == ["new_series", "remove_series"]
    r = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}", content="add_event=delete_album", headers=FORM)
    assert r.json()["events"] == ["new_series", "remove_series", "delete_album"]
    r = alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}",
                           content="remove_event=new_series&remove_event=remove_series", headers=FORM)
    assert r.json()["events"] == ["delete_album"]
    assert alice.client.patch(f"/albums/{album}/webhooks/{hook['id']}", content="event=new_user&add_event=new_series",
                              headers=FORM).status_code == 400
    # delete: 204, then KHEOPS's 404
    assert alice.client.delete(f"/albums/{album}/webhooks/{hook['id']}").status_code == 204
    assert alice.client.get(f"/albums/{album}/webhooks/{hook['id']}").status_code == 404


def test_a_wrong_secret_shows_as_failed_attempts(person):
    """The receiver expects another secret: every attempt is refused (401) and the trigger reads "fail"."""
    receiver = KheopsReceiver("the-receiver-expects-this-one")
    try:
        alice, bob = person("alice"), person("bob")
        album = new_album(alice)
        hook = create(alice, album, receiver.url, "new_user").json()
        assert alice.client.put(f"/albums/{album}/users/{bob.sub}").status_code == 201
        receiver.wait_for(2)  # webhook_max_attempts is 2 here
        deadline = time.monotonic() + 10
        while len((t := wait_attempts(alice, album, hook["id"]))[0]["attempts"]) < 2:
            assert time.monotonic() < deadline, t
            time.sleep(0.1)
        assert [(a["attempt"], a["status"]) for a in t[0]["attempts"]] == [(2, 401), (1, 401)]
        assert not any(d["verified"] for d in receiver.received)
        listed = alice.client.get(f"/albums/{album}/webhooks").json()[0]
        assert listed["last_triggers"] == [{"id": t[0]["id"], "status": "fail"}]
    finally:
        receiver.close()
