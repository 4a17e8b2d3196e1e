"""The first hour's traps (issue 12): each used to be accepted, ignored or a traceback; each is now a one-line
error with a hint before anything is written, or the right behaviour. In-process (tests/clirun.py), no Docker:
DOCKER_HOST points nowhere, and every case that needs no engine stops before it would be asked.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy import checks
from kheopsctl.deploy import install as pipeline
from kheopsctl.doctor.context import DoctorContext
from kheopsctl.doctor.posture import secret_modes
from kheopsctl.gateway.settings import from_env
from kheopsctl.site import SiteLayout
from tests.clirun import run

DEAD_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and any(line.startswith("hint:") for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return next(line for line in lines if line.startswith("hint:"))


def install(site: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run("install", "--dir", str(site), "--no-start", "--yes", *args, env={**DEAD_DOCKER, **(env or {})})


# ---- silently accepted site-breaking settings ----

@pytest.mark.parametrize(("args", "env", "key", "hint_part"), [
    # an https root URL on a site install serves over plain HTTP: every link and redirect broken
    (["--root-url", "https://kheops.example.org"], {}, "site.root_url", "kheopsctl secure"),
    # a port in the root URL that nginx does not publish
    (["--root-url", "http://127.0.0.1:8081"], {}, "ports.http = 80", "ports.http = 8081"),
    # the busy-port hint's "set ports.http" alone: login redirects kept pointing at :80
    ([], {"KHEOPS_PORTS__HTTP": "8081"}, "ports.http = 8081", "http://127.0.0.1:8081"),
    # a LAN address with the loopback bind address: nobody else can open it
    (["--root-url", "http://192.0.2.10"], {}, "site.bind_address", "0.0.0.0"),
    # the gateway used to crash at start with a traceback
    ([], {"KHEOPS_GATEWAY__LOG_LEVEL": "verbose"}, "gateway.log_level", ""),
    ([], {"KHEOPS_KEYCLOAK__HEAP_MAX": "lots"}, "keycloak.heap_max", "768m"),
    ([], {"KHEOPS_KEYCLOAK__REALM": "my realm"}, "keycloak.realm", ""),
    ([], {"KHEOPS_KEYCLOAK__ADMIN_USER": ""}, "keycloak.admin_user", ""),
    ([], {"KHEOPS_KEYCLOAK__PUBLIC_URL": "login.example.org"}, "keycloak.public_url", "https://"),
    # checked only after the secrets were written
    ([], {"KHEOPS_GATEWAY__CA_BUNDLE": "/nonexistent/ca.pem"}, "gateway.ca_bundle", ""),
    # one underscore: ignored without a word
    ([], {"KHEOPS_PORTS_HTTP": "8081"}, "KHEOPS_PORTS__HTTP", "double underscore"),
])
def test_site_breaking_settings_are_refused_before_writing(tmp_path, args, env, key, hint_part):
    site = tmp_path / "site"
    hint = one_line_error(install(site, *args, env=env), key)
    assert hint_part in hint
    assert not site.exists()


def test_agreeing_settings_still_install(tmp_path):
    result = install(tmp_path / "a", "--root-url", "http://127.0.0.1:8081", env={"KHEOPS_PORTS__HTTP": "8081"})
    assert result.returncode == 0, result.stderr
    result = install(tmp_path / "b", "--root-url", "http://192.0.2.10", env={"KHEOPS_SITE__BIND_ADDRESS": "0.0.0.0"})
    assert result.returncode == 0, result.stderr


def test_a_ca_bundle_that_is_not_pem_is_refused(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    one_line_error(install(tmp_path / "site", env={"KHEOPS_GATEWAY__CA_BUNDLE": str(bundle)}), "no PEM certificate")
    assert not (tmp_path / "site").exists()


def test_the_gateway_loader_names_the_variable():
    with pytest.raises(ValueError, match="KHEOPS_GW_LISTEN_PORT"):  # was: "invalid literal for int()"
        from_env({"KHEOPS_GW_LISTEN_PORT": "eighty"})
    with pytest.raises(ValueError, match="KHEOPS_GW_LOG_LEVEL"):
        from_env({"KHEOPS_GW_LOG_LEVEL": "verbose"})
    result = run("gateway", "migrate", env={"KHEOPS_GW_LISTEN_PORT": "eighty"})
    one_line_error(result, "KHEOPS_GW_LISTEN_PORT")


# ---- silent overwrites and ignores ----

def test_someone_elses_compose_file_is_not_replaced(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    theirs = site / "docker-compose.yml"
    theirs.write_text("services:\n  mine: {image: busybox}\n")
    one_line_error(install(site), "docker-compose.yml")
    assert theirs.read_text() == "services:\n  mine: {image: busybox}\n"
    assert not (site / "kheops.toml").exists()


def test_a_second_admin_password_file_is_not_ignored(tmp_path):
    first, other = tmp_path / "pw1", tmp_path / "pw2"
    first.write_text("first-admin-password\n")
    other.write_text("another-admin-password\n")
    site = tmp_path / "site"
    assert install(site, "--admin-password-file", str(first)).returncode == 0
    assert install(site, "--admin-password-file", str(first)).returncode == 0  # the same one: fine
    one_line_error(install(site, "--admin-password-file", str(other)), "never overwritten")
    assert (site / "secrets" / "keycloak_admin_password").read_text() == "first-admin-password\n"


# ---- tracebacks instead of errors ----

def test_dir_under_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(install(afile / "sub"), "is a file")


def test_utf16_password_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_bytes("a-long-enough-password".encode("utf-16"))
    one_line_error(install(tmp_path / "site", "--admin-password-file", str(pw)), "not UTF-8")


# ---- after an interrupted first run ----

def test_an_interrupted_first_run_says_where_the_password_is_and_the_next_shows_it(tmp_path, monkeypatch):
    """Ctrl-C right after the secrets were written (the one fake here: a KeyboardInterrupt raised at that exact
    step, which a real Ctrl-C cannot hit reliably)."""
    site = tmp_path / "site"

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "write_sitefile", interrupted)
        first = install(site)
    assert first.returncode == 130  # click: interrupted
    password_file = site / "secrets" / "keycloak_admin_password"
    password = password_file.read_text().strip()
    assert str(password_file) in first.stderr and password not in first.stderr
    second = install(site)
    assert second.returncode == 0 and password in second.stderr  # shown now, since it never was
    assert password not in install(site).stderr  # and only once


def test_stray_temp_files_are_cleaned_and_never_counted_as_secrets(tmp_path):
    site = tmp_path / "site"
    assert install(site).returncode == 0
    stray = site / "secrets" / ".postgres_password.x1y2.tmp"  # what a kill -9 inside write_atomic leaves
    stray.write_text("half")
    layout = SiteLayout(site)
    found = secret_modes(DoctorContext(settings_from_dict({}), layout))
    assert stray.name not in found.details["files"]
    assert install(site).returncode == 0
    assert not stray.exists()
    assert stat.S_IMODE((site / "secrets").stat().st_mode) == 0o700


# ---- hints that fit ----

def test_no_start_is_suggested_by_install_only(tmp_path):
    site = tmp_path / "site"
    hint = one_line_error(run("install", "--dir", str(site), "--yes", env=DEAD_DOCKER), "Docker engine", code=3)
    assert "--no-start" in hint and "start dockerd" in hint
    assert install(site).returncode == 0
    for cmd in (["status"], ["logs"], ["down"]):
        hint = one_line_error(run(*cmd, "--dir", str(site), env=DEAD_DOCKER), "Docker engine", code=3)
        assert "--no-start" not in hint


def test_config_hints_name_only_files_that_exist_and_every_command_has_one(tmp_path):
    site = tmp_path / "site"
    hint = one_line_error(install(site, env={"KHEOPS_PORTS__HTTP": "eighty"}), "ports.http")
    assert "kheops.toml" not in hint and "KHEOPS_<SECTION>__<KEY>" in hint
    assert install(site).returncode == 0
    (site / "kheops.toml").write_text((site / "kheops.toml").read_text().replace("http = 80", "http = -1"))
    for cmd in ("status", "doctor"):
        hint = one_line_error(run(cmd, "--dir", str(site), env=DEAD_DOCKER), "ports.http")
        assert str(site / "kheops.toml") in hint


def test_config_help_says_layered():
    result = run("install", "--help")
    assert "layered over" in result.stdout and "instead of" not in result.stdout


# ---- a site is its directory ----

def test_the_project_is_named_after_the_directory_and_recorded(tmp_path):
    site = tmp_path / "My Site"
    assert install(site).returncode == 0
    text = (site / "kheops.toml").read_text()
    assert 'project = "my-site"' in text
    assert len((site / ".kheopsctl" / "site-id").read_text().strip()) == 16
    compose = (site / "docker-compose.yml").read_text()
    assert compose.count((site / ".kheopsctl" / "site-id").read_text().strip()) >= 5  # every service, net, volume


# ---- images on arm64 ----

def test_amd64_only_images_are_refused_on_arm64_with_the_arm64_reference():
    """This host's engine is amd64: the arm64 engine is given by its architecture name (what `docker info`
    reports there)."""
    s = settings_from_dict({})
    checks.check_architecture(s, "amd64")
    with pytest.raises(Exception) as refused:
        checks.check_architecture(s, checks.engine_arch({"Architecture": "aarch64"}))
    assert "images.orthanc" in refused.value.message and "amd64 only" in refused.value.message
    le = settings_from_dict({"site": {"root_url": "https://k.example.org", "mode": "letsencrypt"},
                             "pacs": {"kind": "dicomweb", "url": "http://pacs:8042/dicom-web"}})
    with pytest.raises(Exception) as refused:
        checks.check_architecture(le, "arm64")
    assert "certbot/certbot:arm64v8-v2.1.0" in refused.value.hint


def test_comments_added_to_kheops_toml_survive_a_rerun(tmp_path):
    site = tmp_path / "site"
    assert install(site).returncode == 0
    toml = site / "kheops.toml"
    toml.write_text("# our hospital's site: ask ops before changing\n" + toml.read_text())
    assert install(site).returncode == 0
    assert toml.read_text().startswith("# our hospital's site")
