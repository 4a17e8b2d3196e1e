"""A real Keycloak (Maven Central server distribution, ``start-dev``) on a free loopback port, importing the
realm kheopsctl renders, plus helpers to get real tokens from it.

The distribution is unpacked once into a cache directory (``KHEOPS_TEST_CACHE``, default
``~/.cache/kheops-test``) from ``KHEOPS_TEST_KEYCLOAK_TARBALL`` or, when missing, fetched with
``mvn dependency:copy``. Each session uses an in-memory database (``--db dev-mem``), so nothing persists.
If Java, the tarball or Maven are missing the fixture FAILS: these tests need the real server.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import hashlib
import html
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx

VERSION = os.environ.get("KHEOPS_TEST_KEYCLOAK_VERSION", "26.4.7")
CACHE = Path(os.environ.get("KHEOPS_TEST_CACHE", Path.home() / ".cache" / "kheops-test"))
TARBALL = Path(os.environ.get("KHEOPS_TEST_KEYCLOAK_TARBALL", f"/tmp/kc/keycloak-quarkus-dist-{VERSION}.tar.gz"))
REALM = "kheops"
REDIRECT_URI = "http://127.0.0.1/callback"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distribution() -> Path:
    """The unpacked server (shared by sessions, built once; a file lock serialises first-time setup)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    home = CACHE / f"keycloak-{VERSION}"
    with open(CACHE / f"keycloak-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / "bin" / "kc.sh").exists():
            return home
        tarball = TARBALL
        if not tarball.exists():
            tarball = CACHE / TARBALL.name
            if not tarball.exists():
                subprocess.run(
                    ["mvn", "-q", "dependency:copy", f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz",
                     f"-DoutputDirectory={CACHE}"], check=True, timeout=600,
                )
        staging = Path(tempfile.mkdtemp(dir=CACHE))
        with tarfile.open(tarball) as tar:
            tar.extractall(staging, filter="tar")
        (next(staging.iterdir())).rename(home)
        shutil.rmtree(staging, ignore_errors=True)
        return home


def site_settings(port: int, root_url: str = "http://127.0.0.1"):
    """kheopsctl settings for a site whose Keycloak is this test server."""
    from kheopsctl.config import Settings

    settings = Settings()
    settings.site.root_url = root_url
    settings.site.bind_address = "127.0.0.1"
    settings.ports.keycloak = port
    settings.keycloak.public_url = f"http://127.0.0.1:{port}"
    return settings


def prepare_site(workdir: Path, settings, admin_password: str, kheopsctl_secret: str):
    """A site directory holding the rendered realm and the two secrets the realm reconcile reads."""
    from kheopsctl.deploy.layout import SiteLayout
    from kheopsctl.deploy.render import render_realm

    layout = SiteLayout(workdir / "site")
    layout.realm.parent.mkdir(parents=True)
    layout.realm.write_text(render_realm(settings))
    layout.secrets_dir.mkdir(mode=0o700)
    for name, value in (("keycloak_admin_password", admin_password),
                        ("kheops_client_kheopsctl_secret", kheopsctl_secret)):
        path = layout.secret(name)
        path.write_text(value + "\n")
        path.chmod(0o600)
    return layout


@dataclass
class KeycloakService:
    base_url: str
    admin_password: str
    kheopsctl_secret: str
    process: subprocess.Popen
    workdir: Path
    _admin_token: tuple[float, str] = field(default=(0.0, ""))

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{REALM}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    # -- admin API ------------------------------------------------------------------------------------------
    def admin_token(self) -> str:
        if time.monotonic() - self._admin_token[0] < 30:
            return self._admin_token[1]
        r = httpx.post(f"{self.base_url}/realms/master/protocol/openid-connect/token", data={
            "grant_type": "password", "client_id": "admin-cli", "username": "admin",
            "password": self.admin_password}, timeout=30)
        r.raise_for_status()
        self._admin_token = (time.monotonic(), r.json()["access_token"])
        return self._admin_token[1]

    def admin(self, method: str, path: str, **kw) -> httpx.Response:
        r = httpx.request(method, f"{self.base_url}/admin/realms/{REALM}{path}",
                          headers={"Authorization": f"Bearer {self.admin_token()}"}, timeout=30, **kw)
        r.raise_for_status()
        return r

    def create_user(self, username: str, password: str, email: str, first: str = "Test", last: str = "User") -> str:
        self.admin("POST", "/users", json={
            "username": username, "email": email, "firstName": first, "lastName": last, "enabled": True,
            "emailVerified": True, "requiredActions": [],
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        return self.admin("GET", "/users", params={"username": username, "exact": "true"}).json()[0]["id"]

    # -- tokens ---------------------------------------------------------------------------------------------
    def user_tokens(self, username: str, password: str, client_id: str = "loginConnect") -> dict:
        """Real tokens for a user through the browser flow (authorization code + PKCE), as the UI gets them."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        auth_url = f"{self.issuer}/protocol/openid-connect/auth"
        with httpx.Client(timeout=30, follow_redirects=False) as http:
            page = http.get(auth_url, params={
                "client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                "scope": "openid", "state": "st", "code_challenge": challenge, "code_challenge_method": "S256"})
            page.raise_for_status()
            for cookie in http.cookies.jar:  # Keycloak marks them Secure; a browser on http://127.0.0.1 sends them
                cookie.secure = False
            action = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
            assert action, "no login form in Keycloak's page"
            r = http.post(html.unescape(action.group(1)), data={"username": username, "password": password,
                                                                 "credentialId": ""})
            assert r.status_code == 302, f"login failed: {r.status_code}"
            location = urljoin(auth_url, r.headers["location"])
            code = parse_qs(urlparse(location).query)["code"][0]
            r = http.post(f"{self.issuer}/protocol/openid-connect/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": client_id, "code_verifier": verifier})
            r.raise_for_status()
            return r.json()

    def impersonated_tokens(self, user_id: str, client_id: str = "loginConnect") -> dict:
        """Real tokens of ``user_id`` in a session opened by the master admin's impersonation (the admin
        console's "Impersonate" button): the same browser flow, started from the session cookies that the
        impersonation endpoint sets. Keycloak notes the admin in the session (IMPERSONATOR_ID)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        auth_url = f"{self.issuer}/protocol/openid-connect/auth"
        with httpx.Client(timeout=30, follow_redirects=False) as http:
            r = http.post(f"{self.base_url}/admin/realms/{REALM}/users/{user_id}/impersonation",
                          headers={"Authorization": f"Bearer {self.admin_token()}"})
            r.raise_for_status()
            for cookie in http.cookies.jar:
                cookie.secure = False
            r = http.get(auth_url, params={
                "client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                "scope": "openid", "state": "st", "code_challenge": challenge, "code_challenge_method": "S256"})
            assert r.status_code == 302, f"the impersonated session did not log in: {r.status_code}"
            code = parse_qs(urlparse(urljoin(auth_url, r.headers["location"])).query)["code"][0]
            r = http.post(f"{self.issuer}/protocol/openid-connect/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": client_id, "code_verifier": verifier})
            r.raise_for_status()
            return r.json()

    def master_admin_id(self) -> str:
        r = httpx.get(f"{self.base_url}/admin/realms/master/users", params={"username": "admin", "exact": "true"},
                      headers={"Authorization": f"Bearer {self.admin_token()}"}, timeout=30)
        r.raise_for_status()
        return r.json()[0]["id"]

    def service_token(self) -> str:
        """The confidential client ``kheopsctl``'s own access token (client-credentials grant)."""
        r = httpx.post(f"{self.issuer}/protocol/openid-connect/token", data={
            "grant_type": "client_credentials", "client_id": "kheopsctl", "client_secret": self.kheopsctl_secret},
            timeout=30)
        r.raise_for_status()
        return r.json()["access_token"]

    def master_token(self) -> str:
        """A valid token from another realm (master): right signature chain, wrong issuer for the gateway."""
        return self.admin_token()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_keycloak(timeout: float = 300) -> KeycloakService:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found: Keycloak needs OpenJDK 17+ (apt-get install openjdk-17-jre-headless)")
    home = distribution()
    workdir = Path(tempfile.mkdtemp(prefix="kheops-test-kc-"))
    port = free_port()
    admin_password = secrets.token_urlsafe(16)
    kheopsctl_secret = secrets.token_urlsafe(24)
    settings = site_settings(port)
    layout = prepare_site(workdir, settings, admin_password, kheopsctl_secret)
    import_dir = home / "data" / "import"
    import_dir.mkdir(parents=True, exist_ok=True)
    # the same content for every session (the secret is a placeholder Keycloak fills from the environment)
    shutil.copyfile(layout.realm, import_dir / f"{REALM}-realm.json")
    env = {**os.environ, "KC_BOOTSTRAP_ADMIN_USERNAME": "admin", "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
           "KHEOPS_CLIENT_KHEOPSCTL_SECRET": kheopsctl_secret,
           "JAVA_OPTS_KC_HEAP": "-XX:MaxRAMPercentage=10 -Xms64m -Xmx512m"}
    log = open(workdir / "keycloak.log", "w")
    process = subprocess.Popen(
        [str(home / "bin" / "kc.sh"), "start-dev", "--import-realm", "--db=dev-mem", "--http-host=127.0.0.1",
         f"--http-port={port}", "--http-management-port=0", "--health-enabled=false", "--cache=local"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
    )
    service = KeycloakService(f"http://127.0.0.1:{port}", admin_password, kheopsctl_secret, process, workdir)
    atexit.register(service.stop)  # never leave a JVM behind, even when the session ends abruptly
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = (workdir / "keycloak.log").read_text()[-3000:]
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"Keycloak exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{service.issuer}/.well-known/openid-configuration", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"Keycloak did not start within {timeout} s")
        time.sleep(1)
    # what kheopsctl does after every bring-up: reconcile the live realm (creates the kheops client scope)
    from kheopsctl.deploy.realm_sync import reconcile

    try:
        reconcile(settings, layout)
    except Exception:
        service.stop()
        raise
    return service
