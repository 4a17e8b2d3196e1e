"""Issue 10's end-to-end acceptance: a KHEOPS-style client script against the installed site.

The script below speaks to the site the way KHEOPS's own web UI and users' scripts do: plain httpx, form bodies
written by hand as the UI writes them, the query strings it sends, and real Keycloak tokens (authorization code +
PKCE through the real login form). It uses no kheopsctl code, only the site's URL.

It creates an album, uploads a study, shares it with a second user, makes a share link, exchanges a token for a
viewer token and downloads a ZIP through ``/api/link/<token>/``, receives a webhook whose ``X-Kheops-Signature`` it
verifies, and reads the album's timeline.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import queue
import threading
import uuid
import zipfile
from urllib.parse import urlencode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import httpx
import pytest

from tests.data.dicomgen import make_study, multipart_related
from tests.oidc_login import create_user, login

pytestmark = pytest.mark.docker

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Receiver:
    """A webhook receiver on the host, reachable from the gateway's container through the compose network's gateway
    address. It keeps each delivery's body and headers."""

    def __init__(self):
        self.deliveries: queue.Queue = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.deliveries.put((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 60.0) -> tuple[dict, bytes]:
        return self.deliveries.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def host_address_seen_by_gateway(project: str) -> str:
    """The address of this host on the gateway container's network (the network's gateway)."""
    client = docker.from_env()
    try:
        (gateway,) = client.containers.list(filters={"label": [f"com.docker.compose.project={project}",
                                                                "com.docker.compose.service=gateway"]})
        networks = gateway.attrs["NetworkSettings"]["Networks"]
        return next(n["Gateway"] for n in networks.values() if n.get("Gateway"))
    finally:
        client.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def people(installed_stack):
    s = installed_stack.settings
    tag = uuid.uuid4().hex[:6]
    tokens = {}
    for name in ("alice", "bob"):
        username = f"compat-{name}-{tag}"
        create_user(installed_stack.keycloak_url, installed_stack.admin_password, s.keycloak.realm, username,
                    f"{name}-password-12345", email=f"{username}@example.org")
        tokens[name] = login(installed_stack.keycloak_url, s.keycloak.realm, username, f"{name}-password-12345",
                             redirect_uri=f"{s.root_url}/callback")["access_token"]
        tokens[name + "_email"] = f"{username}@example.org"
    return tokens


def test_a_kheops_client_script_runs_against_the_site(installed_stack, people):
    api = f"{installed_stack.http_url}/api"
    alice, bob = people["alice"], people["bob"]
    receiver = Receiver()
    try:
        with httpx.Client(base_url=api, timeout=60) as http:
            # an album, made the way the KHEOPS UI makes it (form body)
            r = http.post("/albums", headers={**bearer(alice), **FORM}, content="name=Compat%20album&description=e2e")
            assert r.status_code == 201, r.text
            album = r.json()["album_id"]

            # a webhook on it, with a secret, two repeated event fields
            hook_url = f"http://{host_address_seen_by_gateway(installed_stack.settings.project)}:{receiver.port}/hook"
            secret = "compat-webhook-secret"
            r = http.post(f"/albums/{album}/webhooks", headers={**bearer(alice), **FORM}, content=urlencode([
                ("url", hook_url), ("name", "compat"), ("secret", secret),
                ("event", "new_series"), ("event", "new_user"), ("enabled", "true")]))
            assert r.status_code == 201, r.text
            hook = r.json()
            assert hook["use_secret"] is True and set(hook["events"]) == {"new_series", "new_user"}

            # upload a study into the album (STOW-RS, ?album=)
            study = make_study(series=("CT", "MR"), instances_per_series=2, patient_name="Compat^Script")
            body, content_type = multipart_related(list(study.all_instances()))
            r = http.post("/studies", params={"album": album}, content=body,
                          headers={**bearer(alice), "Content-Type": content_type, "Accept": "application/dicom+json"})
            assert r.status_code == 200, r.text

            # the webhook fires for the new series; the receiver checks the signature as KHEOPS receivers do
            headers, payload = receiver.next()
            lower = {k.lower(): v for k, v in headers.items()}
            expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
            assert lower["x-kheops-signature"] == expected
            event = json.loads(payload)
            assert event["album_id"] == album and event["is_manual_trigger"] is False
            assert "updated_study" in event

            # bob has used the site once (the gateway knows users from their first request; KHEOPS can also look
            # them up in Keycloak, which we do not do)
            assert http.get("/studies", params={"inbox": "true"}, headers=bearer(bob)).status_code == 204
            # share the study with bob (by email), from the album; KHEOPS answers 201
            r = http.put(f"/studies/{study.study_uid}/users/{people['bob_email']}", params={"album": album},
                         headers=bearer(alice))
            assert r.status_code == 201, r.text
            r = http.get("/studies", params={"inbox": "true"}, headers=bearer(bob))
            assert r.status_code == 200, r.text
            assert [s["0020000D"]["Value"][0] for s in r.json()] == [study.study_uid]

            # a share link (album capability token) that reads and downloads
            r = http.post("/capabilities", headers={**bearer(alice), **FORM}, content=(
                f"title=compat%20link&scope_type=album&album={album}"
                "&read_permission=true&download_permission=true&appropriate_permission=false&write_permission=false"))
            assert r.status_code == 201, r.text
            link = r.json()["secret"]
            r = http.get(f"/link/{link}/studies", params={"album": album})
            assert r.status_code == 200, r.text
            assert [s["0020000D"]["Value"][0] for s in r.json()] == [study.study_uid]
            r = http.post("/token/introspect", headers=FORM, content=f"token={link}")
            assert r.status_code == 200 and r.json()["active"] is True, r.text
            assert "read" in r.json()["scope"].split()

            # a viewer token by RFC 8693 token exchange, exactly as the UI's body is written; then the ZIP
            r = http.post("/token", headers={**bearer(alice), **FORM}, content=(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
                f"&subject_token={alice}"
                "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
                f"&scope=viewer read&studyUID={study.study_uid}&source_type=album&source_id={album}"))
            assert r.status_code == 200, r.text
            exchanged = r.json()
            assert exchanged["token_type"].lower() == "bearer" and exchanged["expires_in"] > 0
            r = http.get(f"/link/{exchanged['access_token']}/studies/{study.study_uid}",
                         params={"accept": "application/zip", "album": album})
            assert r.status_code == 200, r.text[:300]
            archive = zipfile.ZipFile(io.BytesIO(r.content))
            sent = {hashlib.sha256(d).hexdigest() for d in study.all_instances()}
            got = {hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist() if not n.endswith("DICOMDIR")}
            assert sent <= got, "every uploaded instance is in the ZIP, byte for byte"

            # the album's timeline (KHEOPS event objects), newest first
            r = http.get(f"/albums/{album}/events", headers=bearer(alice))
            assert r.status_code == 200, r.text
            mutations = [e.get("mutation_type") for e in r.json() if e.get("event_type") == "Mutation"]
            assert "CREATE_ALBUM" in mutations
            assert {"IMPORT_STUDY", "IMPORT_SERIES"} & set(mutations), mutations
    finally:
        receiver.close()
