"""The local stand-ins honour the interfaces of the official images they replace.

The rendered stack differs from production only in image references, so each stand-in must behave like its
official image where kheopsctl relies on it: entrypoints, *_FILE secrets, init hooks, volumes, ports, users.
Everything runs on the real Docker engine against the images built by tests/stack/build-images; a missing engine
or image fails loudly. Containers are started together up front (Keycloak is slow to boot) and removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pydicom.data
import pytest

pytestmark = pytest.mark.docker

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
PREFIX = f"kt-img-{uuid.uuid4().hex[:8]}"
IMAGES = {
    "postgres": "kheops-test/postgres:15",
    "keycloak": "kheops-test/keycloak:26.4.7",
    "orthanc": "kheops-test/orthanc:1.10",
    "nginx": "kheops-test/nginx:1.22",
    "certbot": "kheops-test/certbot:2.1",
    "python": "kheops-test/python:3.11-bookworm",
    "pebble": "kheops-test/pebble:2.4",
}
PG_PASSWORD = "s3cret with spaces"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def host_port(container: str, port: str) -> int:
    out = docker("port", container, port).stdout.splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def logs(container: str) -> str:
    proc = docker("logs", container, check=False)
    return proc.stdout + proc.stderr


def wait_for(what: str, probe, container: str, timeout: float = 90):
    """Poll probe() until it returns a truthy value; on timeout fail with the container's last log lines."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # the service is still starting
            last = exc
        state = docker("inspect", "-f", "{{.State.Status}}", container, check=False).stdout.strip()
        if state in ("exited", "dead"):
            break
        time.sleep(1)
    tail = "\n".join(logs(container).splitlines()[-30:])
    pytest.fail(f"{what} not ready after {timeout:.0f}s (last error: {last!r})\n--- {container} logs ---\n{tail}")


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="kt-img-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def started(workdir: Path):
    """Start the long-running stand-ins at once so their boot times overlap; remove them afterwards."""
    if shutil.which(DOCKER) is None:
        pytest.fail(f"{DOCKER} not found: run tests/stack/setup-host")
    if docker("info", check=False).returncode != 0:
        pytest.fail("the Docker engine is not reachable: run tests/stack/setup-host")
    missing = [tag for tag in IMAGES.values() if docker("image", "inspect", tag, check=False).returncode != 0]
    if missing:
        pytest.fail(f"test images missing: {', '.join(missing)}: run tests/stack/build-images")

    names: dict[str, str] = {}

    def run(key: str, *args: str) -> None:
        name = f"{PREFIX}-{key}"
        docker("run", "-d", "--name", name, *args)
        names[key] = name

    # postgres: password from a file, user and database from the environment, two init scripts
    pg = workdir / "pg"
    (pg / "init").mkdir(parents=True)
    (pg / "password").write_text(PG_PASSWORD + "\n")
    (pg / "init" / "10-schema.sql").write_text("CREATE TABLE probe (note text);\n")
    (pg / "init" / "20-data.sh").write_text(
        '#!/bin/bash\nset -e\npsql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" '
        "-c \"INSERT INTO probe VALUES ('from init script as $(id -un)')\"\n"
    )
    # the secret is 0600 and owned by root, as kheopsctl writes secrets: the entrypoint reads it before dropping
    # to the postgres user, like the official image
    (pg / "password").chmod(0o600)
    (pg / "init" / "10-schema.sql").chmod(0o644)
    (pg / "init" / "20-data.sh").chmod(0o755)
    run("postgres", "-p", "127.0.0.1::5432",
        "-v", f"{pg / 'password'}:/run/secrets/pg_password:ro",
        "-v", f"{pg / 'init'}:/docker-entrypoint-initdb.d:ro",
        "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/pg_password",
        "-e", "POSTGRES_USER=kheopsuser", "-e", "POSTGRES_DB=kheops",
        IMAGES["postgres"])

    # keycloak: dev mode, admin from the environment, a realm imported from data/import, health on 9000
    realm = workdir / "realm"
    realm.mkdir()
    (realm / "kt-test-realm.json").write_text(json.dumps({"realm": "kt-test", "enabled": True}))
    (realm / "kt-test-realm.json").chmod(0o644)
    run("keycloak", "-p", "127.0.0.1::8080", "-p", "127.0.0.1::9000",
        "-v", f"{realm}:/opt/keycloak/data/import:ro",
        "-e", "KC_BOOTSTRAP_ADMIN_USERNAME=admin", "-e", "KC_BOOTSTRAP_ADMIN_PASSWORD=admin-pw",
        "-e", "KC_HEALTH_ENABLED=true", "-e", "JAVA_OPTS_KC_HEAP=-Xms64m -Xmx512m",
        IMAGES["keycloak"], "start-dev", "--import-realm")

    # orthanc: the image's own default configuration
    run("orthanc", "-p", "127.0.0.1::8042", IMAGES["orthanc"])

    # nginx: a conf.d site and a template rendered by the envsubst hook
    ngx = workdir / "nginx"
    (ngx / "conf.d").mkdir(parents=True)
    (ngx / "templates").mkdir()
    (ngx / "conf.d" / "probe.conf").write_text(
        'server { listen 8081; location / { return 200 "conf.d site\\n"; } }\n')
    (ngx / "templates" / "tpl.conf.template").write_text(
        'server { listen 8082; location / { return 200 "${KT_GREETING} $request_method\\n"; } }\n')
    for p in ngx.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    # a copy of the image's conf.d plus ours: the stock default.conf must keep working
    run("nginx", "-p", "127.0.0.1::80", "-p", "127.0.0.1::8081", "-p", "127.0.0.1::8082",
        "-v", f"{ngx / 'conf.d' / 'probe.conf'}:/etc/nginx/conf.d/probe.conf:ro",
        "-v", f"{ngx / 'templates'}:/etc/nginx/templates:ro",
        "-e", "KT_GREETING=hello-from-template",
        IMAGES["nginx"])
    try:
        yield names
    finally:
        for name in names.values():
            docker("rm", "-f", "-v", name, check=False)


def inspect_config(tag: str) -> dict:
    return json.loads(docker("image", "inspect", tag).stdout)[0]["Config"]


@pytest.mark.parametrize(
    "key, entrypoint, cmd, user, volumes, ports",
    [
        ("postgres", ["docker-entrypoint.sh"], ["postgres"], "", {"/var/lib/postgresql/data"}, {"5432/tcp"}),
        ("keycloak", ["/opt/keycloak/bin/kc.sh"], None, "1000", set(), {"8080/tcp", "8443/tcp", "9000/tcp"}),
        ("orthanc", ["Orthanc"], ["/etc/orthanc/"], "", {"/var/lib/orthanc/db"}, {"4242/tcp", "8042/tcp"}),
        ("nginx", ["/docker-entrypoint.sh"], ["nginx", "-g", "daemon off;"], "", set(), {"80/tcp"}),
        ("certbot", ["certbot"], None, "", {"/etc/letsencrypt", "/var/lib/letsencrypt"}, {"80/tcp", "443/tcp"}),
        ("python", None, ["python3"], "", set(), set()),
    ],
)
def test_image_metadata_matches_official(key, entrypoint, cmd, user, volumes, ports):
    config = inspect_config(IMAGES[key])
    assert config["Entrypoint"] == entrypoint
    assert config["Cmd"] == cmd
    assert config["User"] == user
    assert set(config.get("Volumes") or {}) == volumes
    assert set(config.get("ExposedPorts") or {}) == ports
    labels = config.get("Labels") or {}
    assert len(labels.get("org.kheopsctl.test.inputs", "")) == 64, "build-images labels each image with its inputs hash"


def test_postgres_initialises_from_file_secret_and_init_scripts(started):
    name = started["postgres"]

    def dsn() -> str:  # a restart publishes the port anew
        return f"host=127.0.0.1 port={host_port(name, '5432/tcp')} dbname=kheops user=kheopsuser connect_timeout=3"

    def connect():
        return psycopg.connect(dsn(), password=PG_PASSWORD)

    conn = wait_for("postgres", connect, name, timeout=60)
    with conn:
        rows = conn.execute("SELECT note FROM probe").fetchall()
        assert rows == [("from init script as postgres",)], "the *.sql then *.sh init scripts ran, as postgres"
        method = conn.execute("SELECT current_setting('password_encryption')").fetchone()[0]
        assert method == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn(), password="wrong").close()
    # the server runs as postgres with a private data directory, and pg_isready is on PATH
    exec_out = docker("exec", name, "sh", "-c",
                      "stat -c '%U %a' \"$PGDATA\"; pg_isready -h 127.0.0.1 -U kheopsuser -d kheops").stdout
    assert exec_out.splitlines()[0] == "postgres 700"
    assert "accepting connections" in exec_out
    server_user = docker("exec", name, "sh", "-c", "stat -c %U /proc/1").stdout.strip()
    assert server_user == "postgres"
    # a restart keeps the cluster and does not re-run the init scripts
    docker("restart", name)
    conn = wait_for("postgres after restart", connect, name, timeout=60)
    with conn:
        assert conn.execute("SELECT count(*) FROM probe").fetchone()[0] == 1
    assert "skipping initialization" in logs(name)


def test_postgres_refuses_empty_password(started):
    proc = docker("run", "--rm", IMAGES["postgres"], check=False, timeout=60)
    assert proc.returncode != 0
    assert "superuser password is not specified" in proc.stderr


def test_orthanc_serves_dicomweb_with_its_default_config(started):
    name = started["orthanc"]
    base = f"http://127.0.0.1:{host_port(name, '8042/tcp')}"
    auth = ("orthanc", "orthanc")
    wait_for("orthanc", lambda: httpx.get(f"{base}/system", auth=auth, timeout=3).status_code == 200, name, 60)
    assert httpx.get(f"{base}/dicom-web/studies", timeout=5).status_code == 401, "basic auth is on by default"
    dcm = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    uid = pydicom.dcmread(dcm).StudyInstanceUID
    upload = httpx.post(f"{base}/instances", content=dcm.read_bytes(), auth=auth, timeout=30)
    assert upload.status_code == 200, upload.text
    studies = httpx.get(f"{base}/dicom-web/studies", auth=auth, headers={"Accept": "application/dicom+json"},
                        timeout=10)
    assert studies.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in studies.json()] == [uid]
    plugins = httpx.get(f"{base}/plugins", auth=auth, timeout=5).json()
    assert {"dicom-web", "postgresql-index"} <= set(plugins)
    assert docker("exec", name, "bash", "-c", "test -d /var/lib/orthanc/db && echo ok").stdout.strip() == "ok"


def test_nginx_runs_hooks_and_serves_confd(started):
    name = started["nginx"]

    def get(port_key: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{host_port(name, port_key)}/", timeout=3)

    assert wait_for("nginx", lambda: get("8081/tcp").text == "conf.d site\n", name, 30)
    assert get("8082/tcp").text == "hello-from-template GET\n", "template rendered, nginx variables kept"
    assert "kheops-test nginx stand-in" in get("80/tcp").text, "stock default.conf still served"
    time.sleep(0.5)
    assert '"GET / HTTP/1.1" 200' in logs(name), "access log goes to the container's stdout"
    assert docker("exec", name, "curl", "--version").stdout.startswith("curl ")


def test_certbot_entrypoint():
    proc = docker("run", "--rm", IMAGES["certbot"], "--version")
    assert "certbot 2.1." in proc.stdout + proc.stderr
    shell = docker("run", "--rm", "--entrypoint", "sh", IMAGES["certbot"], "-c",
                   "test -d /etc/letsencrypt && test -d /var/lib/letsencrypt && echo ok")
    assert shell.stdout.strip() == "ok"


def test_python_pip_and_venv():
    script = r"""
set -e
python --version; python3 --version; pip --version
python -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print("venv", sys.prefix)'
mkdir -p /tmp/pkg/ktprobe && echo 'VALUE = 42' > /tmp/pkg/ktprobe/__init__.py
printf '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n[project]\nname = "ktprobe"\nversion = "1"\n' > /tmp/pkg/pyproject.toml
pip install --quiet --no-index --no-build-isolation /tmp/pkg
cd / && python -c 'import ktprobe; print("installed", ktprobe.VALUE)'
"""
    proc = docker("run", "--rm", IMAGES["python"], "sh", "-c", script, timeout=120)
    out = proc.stdout
    assert "Python 3.11." in out
    assert "venv /tmp/venv" in out
    assert "installed 42" in out, "pip installs system-wide as root, like the official image"


def test_pebble_binaries():
    proc = docker("run", "--rm", IMAGES["pebble"], "bash", "-c",
                  'command -v pebble pebble-challtestsrv && echo "nosleep=$PEBBLE_VA_NOSLEEP"')
    assert proc.stdout.split() == ["/usr/bin/pebble", "/usr/bin/pebble-challtestsrv", "nosleep=1"]


def test_keycloak_starts_imports_realm_and_reports_health(started):
    name = started["keycloak"]
    health = f"http://127.0.0.1:{host_port(name, '9000/tcp')}/health/ready"
    wait_for("keycloak", lambda: httpx.get(health, timeout=3).json().get("status") == "UP", name, 180)
    base = f"http://127.0.0.1:{host_port(name, '8080/tcp')}"
    discovery = httpx.get(f"{base}/realms/kt-test/.well-known/openid-configuration", timeout=10)
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == f"{base}/realms/kt-test"
    token = httpx.post(f"{base}/realms/master/protocol/openid-connect/token", timeout=10,
                       data={"grant_type": "password", "client_id": "admin-cli",
                             "username": "admin", "password": "admin-pw"})
    assert token.status_code == 200, "KC_BOOTSTRAP_ADMIN_* honoured"
    who = docker("exec", name, "bash", "-c", "id -u; pwd; command -v curl wget || true").stdout.split()
    assert who == ["1000", "/opt/keycloak"], "user 1000, WORKDIR /opt/keycloak, no curl/wget as in the official image"


def test_build_images_rerun_rebuilds_nothing():
    """run-all has just built the images: running the script again must find every image up to date."""
    script = Path(__file__).resolve().parent / "build-images"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stderr.splitlines() if line.startswith("kheops-test/")]
    assert {row[0] for row in rows} >= set(IMAGES.values())
    assert {row[0]: row[1] for row in rows if row[1] != "cached"} == {}


def test_keycloak_stand_in_is_as_bare_as_the_official_image():
    """quay.io/keycloak/keycloak is ubi9-micro plus a JRE: bash and coreutils, no util-linux, no HTTP client.
    Nothing can change user in it, so whatever starts as root stays root: the stand-in must not hide that."""
    proc = docker("run", "--rm", "--entrypoint", "bash", IMAGES["keycloak"], "-c",
                  "id -u; for t in setpriv su runuser gosu sudo setsid unshare nsenter curl wget; do "
                  "command -v $t; done; command -v bash cat grep")
    lines = proc.stdout.split()
    assert lines[0] == "1000"
    assert [Path(p).name for p in lines[1:]] == ["bash", "cat", "grep"]


def test_postgres_stand_in_trusts_loopback_like_the_official_image(started):
    """The official image's initdb runs without --auth options: the socket and 127.0.0.1/::1 are trusted, and
    only its appended ``host all all all`` line asks for a password. A login over loopback proves nothing."""
    name = started["postgres"]
    wait_for("postgres", lambda: docker("exec", name, "pg_isready", "-h", "127.0.0.1", check=False).returncode == 0,
             name, timeout=60)
    proc = docker("exec", "-e", "PGPASSWORD=certainly-wrong", name, "psql", "-h", "127.0.0.1", "-U", "kheopsuser",
                  "-d", "kheops", "-XAtc", "select 1", check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "1"), proc.stderr
    hba = docker("exec", name, "sh", "-c", 'grep -v "^#" "$PGDATA/pg_hba.conf"').stdout.split("\n")
    rules = [line.split() for line in hba if line.strip()]
    assert ["host", "all", "all", "127.0.0.1/32", "trust"] in rules
    assert rules[-1] == ["host", "all", "all", "all", "scram-sha-256"]
