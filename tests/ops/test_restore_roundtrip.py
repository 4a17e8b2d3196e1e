"""Backup and restore on the real installed stack (its own project and ports, tests/secure/pebble.fresh_stack).

One site is filled (two users with passwords, albums, a member, shares, a share link, a webhook, studies),
backed up while a STOW is in flight, purged (``down --purge-data``) and restored into a new directory: every
instance comes back byte for byte (SHA-256 of each one retrieved through the site), the albums and shares are
the same, the same passwords log in and the old share link still opens its album. Then the same archive is
restored under a second project name, as on a new host, then again over that site with --force (which backs
it up first), and ``restore --verify`` checks it in a throwaway project. Bad input against a live site: an
existing site is never overwritten without --force, and a backup onto a full disk stops before writing.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.data.dicomgen import make_study, multipart_related
from tests.gateway.dicomweb.helpers import parts_of
from tests.oidc_login import create_user, login
from tests.secure.pebble import fresh_stack, purge_project
from tests.stackfixture import KHEOPSCTL, describe_failure

pytestmark = pytest.mark.docker

PROJECT = "kbackup-e2e"
SECOND = "kbackup-e2e2"
HTTP, HTTPS, KEYCLOAK = 18580, 18583, 18581
USERS = {"alice": "alice-password-12345", "bob": "bob-password-123456"}
RETRIEVE = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class Site:
    """A user's view of a running site: API clients per user, through nginx."""

    def __init__(self, stack):
        self.stack = stack
        s = stack.settings
        self.root, self.kc, self.realm = s.root_url, stack.keycloak_url, s.keycloak.realm
        self.clients: dict[str, httpx.Client] = {}
        self.subs: dict[str, str] = {}

    def log_in(self, user: str) -> httpx.Client:
        tokens = login(self.kc, self.realm, user, USERS[user], redirect_uri=f"{self.root}/callback")
        client = httpx.Client(base_url=f"{self.root}/api", timeout=120,
                              headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert client.get("/inboxinfo").status_code == 200
        self.clients[user] = client
        return client

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def stow(client: httpx.Client, study, album: str | None = None) -> httpx.Response:
    body, ct = multipart_related(list(study.all_instances()))
    for _ in range(30):  # a backup may pause uploads: 503 + Retry-After, as a client would honour it
        r = client.post("/studies", content=body, params={"album": album} if album else None,
                        headers={"Content-Type": ct, "Accept": "application/dicom+json"})
        if r.status_code != 503:
            return r
        time.sleep(min(int(r.headers.get("retry-after", "2")), 2))
    return r


def instance_digests(client: httpx.Client) -> dict[str, str]:
    """SHA-256 of every instance the user sees, each retrieved on its own through the gateway."""
    import hashlib

    out = {}
    for study in client.get("/studies", params={"limit": 1000}).json():
        st = study["0020000D"]["Value"][0]
        for series in client.get(f"/studies/{st}/series").json():
            se = series["0020000E"]["Value"][0]
            for inst in client.get(f"/studies/{st}/series/{se}/instances").json():
                sop = inst["00080018"]["Value"][0]
                r = client.get(f"/studies/{st}/series/{se}/instances/{sop}", headers={"Accept": RETRIEVE})
                assert r.status_code == 200, r.text[:300]
                (part,) = parts_of(r)
                out[sop] = hashlib.sha256(part).hexdigest()
    return out


def album_view(client: httpx.Client) -> list[dict]:
    """Albums as the user sees them: name, members, studies, webhooks (ids and settings, not delivery state)."""
    view = []
    for album in sorted(client.get("/albums").json(), key=lambda a: a["album_id"]):
        aid = album["album_id"]
        users = sorted(u.get("user_id") or u.get("sub") or json.dumps(u, sort_keys=True)
                       for u in client.get(f"/albums/{aid}/users").json())
        studies = sorted(s["0020000D"]["Value"][0] for s in client.get("/studies", params={"album": aid}).json())
        hooks = client.get(f"/albums/{aid}/webhooks")
        hook_view = sorted((h["id"], h["name"], h["url"], tuple(h["events"])) for h in hooks.json()) \
            if hooks.status_code == 200 else hooks.status_code
        view.append({"id": aid, "name": album["name"], "users": users, "studies": studies, "webhooks": hook_view})
    return view


def snapshot(site: Site, link: str, link_album: str) -> dict:
    linked = httpx.get(f"{site.root}/api/link/{link}/albums/{link_album}", timeout=60)
    assert linked.status_code == 200, linked.text
    return {
        "digests": {u: instance_digests(c) for u, c in site.clients.items()},
        "albums": {u: album_view(c) for u, c in site.clients.items()},
        "link_album": linked.json()["album_id"],
    }


def cli(stack, *args: str, env: dict | None = None, timeout: float = 1500) -> subprocess.CompletedProcess:
    return stack.run(*args, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    root = tmp_path_factory.mktemp("backup-e2e")
    stack = fresh_stack(root / "site", PROJECT, HTTP, HTTPS, KEYCLOAK)
    purge_project(SECOND)
    try:
        installed = stack.install()
        assert installed.returncode == 0, describe_failure(installed)
        for user, password in USERS.items():
            create_user(stack.keycloak_url, stack.admin_password, stack.settings.keycloak.realm, user, password)
        site = Site(stack)
        alice, bob = site.log_in("alice"), site.log_in("bob")
        bob_sub = bob.get("/inboxinfo").json().get("user_id") or _sub_of(bob)
        studies = [make_study(), make_study(series=("MR",), instances_per_series=4)]
        for st in studies:
            assert stow(alice, st).status_code == 200
        shared = alice.post("/albums", data={"name": "shared with bob"}).json()["album_id"]
        assert alice.put(f"/albums/{shared}/users/{bob_sub}").status_code in (201, 204)
        assert alice.put(f"/studies/{studies[0].study_uid}/albums/{shared}").status_code in (201, 204)
        own = alice.post("/albums", data={"name": "alice only"}).json()["album_id"]
        assert alice.put(f"/studies/{studies[1].study_uid}/albums/{own}").status_code in (201, 204)
        hook = alice.post(f"/albums/{shared}/webhooks", data={
            "name": "nightly", "url": "https://hooks.example.org/kheops", "events": "new_series", "secret": "s" * 32})
        assert hook.status_code == 201, hook.text
        from datetime import datetime, timedelta, timezone

        link = alice.post("/capabilities", data={
            "title": "share link", "scope_type": "album", "album": own, "read_permission": "true",
            "download_permission": "true",
            "expiration_time": (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()})
        assert link.status_code == 201, link.text
        assert stow(bob, make_study(series=("US",), instances_per_series=2)).status_code == 200
        yield {"root": root, "stack": stack, "site": site, "link": link.json()["secret"], "link_album": own}
        site.close()
    finally:
        stack.down(purge=True)
        purge_project(SECOND)


def _sub_of(client: httpx.Client) -> str:
    import jwt

    return jwt.decode(client.headers["Authorization"].split()[1], options={"verify_signature": False})["sub"]


def _slow_stow(client: httpx.Client, study, started: threading.Event, release: threading.Event, result: dict):
    body, ct = multipart_related(list(study.all_instances()))

    def chunks():
        yield body[:200]
        started.set()
        release.wait(120)
        yield body[200:]

    result["r"] = client.post("/studies", content=chunks(),
                              headers={"Content-Type": ct, "Accept": "application/dicom+json"})


def _lock_waiters(stack) -> int:
    import docker

    pg = docker.from_env().containers.get(f"{stack.settings.project}-postgres-1")
    code, out = pg.exec_run(["psql", "-U", "postgres", "-d", "kheops", "-Atc",
                             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"])
    return int(out.decode().strip() or 0) if code == 0 else 0


def test_round_trip_backup_purge_restore_and_second_project(filled):
    stack, site, root = filled["stack"], filled["site"], filled["root"]
    alice = site.clients["alice"]
    # a STOW in flight when the backup starts: the backup waits for it, so its study is whole in the archive
    in_flight = make_study(series=("CT",), instances_per_series=3)
    started, release, result = threading.Event(), threading.Event(), {}
    uploader = threading.Thread(target=_slow_stow, args=(alice, in_flight, started, release, result))
    uploader.start()
    assert started.wait(60)
    backups = root / "backups"
    backup = subprocess.Popen([KHEOPSCTL, "backup", "--dir", str(stack.dir), "--output",
                               str(backups), "--json"], env=stack.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):  # the backup's exclusive lock request queues behind the STOW's shared lock
            if _lock_waiters(stack):
                break
            time.sleep(0.2)
        assert _lock_waiters(stack) == 1, "the backup did not wait for the STOW in flight"
        refused = httpx.post(f"{site.root}/api/studies", content=b"", headers={
            "Authorization": alice.headers["Authorization"], "Content-Type": "multipart/related; boundary=x"})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0  # uploads paused
        assert alice.get("/studies").status_code == 200  # reads go on
    finally:
        release.set()
        uploader.join(120)
    out, err = backup.communicate(timeout=900)
    assert backup.returncode == 0, err[-3000:]
    assert result["r"].status_code == 200, result["r"].text
    made = json.loads(out)
    archive_path = Path(made["path"])
    assert archive_path.parent == backups and oct(archive_path.stat().st_mode & 0o777) == "0o600"
    assert "pausing uploads" in err and "uploads resumed" in err
    assert made["stats"]["orthanc"]["instances"] == 6 + 4 + 2 + 3

    before = snapshot(site, filled["link"], filled["link_album"])
    assert len(before["digests"]["alice"]) == 13 and len(before["digests"]["bob"]) == 2 + 6
    assert in_flight.series[0].sop_uids[0] in before["digests"]["alice"]

    down = stack.down(purge=True)
    assert down.returncode == 0, down.stderr
    restored = stack.__class__(dir=root / "restored", env=stack.env)
    r = cli(restored, "restore", str(archive_path), "--dir", str(restored.dir), "--yes", "--json")
    assert r.returncode == 0, describe_failure(r)
    assert json.loads(r.stdout)["doctor_healthy"] is True
    _same_site(restored, before, filled)

    # an existing site is never overwritten without --force
    again = cli(restored, "restore", str(archive_path), "--dir", str(restored.dir), "--yes")
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr

    # a backup onto a full disk stops before writing anything
    tiny = root / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], check=True)
    try:
        full = cli(restored, "backup", "--output", str(tiny))
        assert full.returncode == 1, full.stderr
        assert "not enough disk space" in full.stderr and "hint:" in full.stderr
        assert list(tiny.iterdir()) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=True)

    # the same archive on a second project name, as a new host would run it
    assert restored.down(purge=True).returncode == 0
    second = stack.__class__(dir=root / "second", env={**stack.env, "KHEOPS_PROJECT": SECOND})
    r = cli(second, "restore", str(archive_path), "--dir", str(second.dir), "--yes", "--json")
    assert r.returncode == 0, describe_failure(r)
    assert json.loads(r.stdout)["project"] == SECOND
    assert second.settings.project == SECOND
    _same_site(second, before, filled)

    # --force replaces a site, and only after backing it up
    r = cli(second, "restore", str(archive_path), "--dir", str(second.dir), "--force", "--yes", "--json")
    assert r.returncode == 0, describe_failure(r)
    replaced = json.loads(r.stdout)
    taken = Path(replaced["previous_backup"])
    assert taken.parent == second.dir / "backups" and taken.stat().st_mode & 0o777 == 0o600
    from kheopsctl.ops import archive

    kept, _files = archive.verify(taken)
    assert kept["project"] == SECOND and kept["stats"]["orthanc"]["instances"] == 15
    _same_site(second, before, filled)

    # --verify: a throwaway project, compared with the manifest, then removed
    v = cli(second, "restore", str(archive_path), "--verify", "--json")
    assert v.returncode == 0, describe_failure(v)
    verified = json.loads(v.stdout)
    assert verified["orthanc"]["instances"] == 15 and verified["md5_checked"] == 15
    assert verified["gateway_rows"]["instances"] == made["stats"]["gateway_rows"]["instances"]
    import docker

    leftovers = [vol.name for vol in docker.from_env().volumes.list() if vol.name.startswith("kheops-verify-")]
    assert leftovers == []
    second.down(purge=True)


def _same_site(stack, before: dict, filled: dict) -> None:
    site = Site(stack)
    try:
        for user in USERS:
            site.log_in(user)  # the same passwords log in
        after = snapshot(site, filled["link"], filled["link_album"])  # the old share link still opens its album
        assert after["digests"] == before["digests"]  # every instance byte-identical
        assert after["albums"] == before["albums"]
        assert after["link_album"] == before["link_album"]
        # consistency: Orthanc holds exactly the instances the gateway indexed, each one readable
        import docker

        pg = docker.from_env().containers.get(f"{stack.settings.project}-postgres-1")
        counts = {}
        for db, sql in (("kheops", "SELECT count(*) FROM instances"),
                        ("orthanc", "SELECT count(*) FROM resources WHERE resourcetype = 3")):
            code, out = pg.exec_run(["psql", "-U", "postgres", "-d", db, "-Atc", sql])
            assert code == 0, out
            counts[db] = int(out.decode().strip())
        assert counts["kheops"] == counts["orthanc"] == 15
        assert os.stat(stack.layout.secrets_dir).st_mode & 0o777 == 0o700
    finally:
        site.close()
