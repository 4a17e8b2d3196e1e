"""`kheopsctl install` edges that need no Docker: --no-start, and bad input stopping before anything is written.

In-process (tests/clirun.py): the CLI's own error path, without a process start per case.
"""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from tests.clirun import run

DEAD_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert any(line.startswith("hint:") for line in lines), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert result.stdout == ""


def test_no_start_works_without_docker(tmp_path):
    site = tmp_path / "site"
    result = run("install", "--dir", str(site), "--no-start", "--yes", "--json", env=DEAD_DOCKER)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["started"] is False and len(data["created_secrets"]) == 9  # 9th: kheops_client_web_secret
    for rel in ("kheops.toml", "docker-compose.yml", "nginx/kheops.conf", "realm/kheops-realm.json",
                "orthanc/orthanc.json"):
        assert (site / rel).is_file(), rel
    assert stat.S_IMODE((site / "secrets").stat().st_mode) == 0o700
    # the generated admin password is shown once (stderr), and stored 0600
    password = (site / "secrets" / "keycloak_admin_password").read_text().strip()
    assert password in result.stderr and password not in result.stdout

    again = run("install", "--dir", str(site), "--no-start", "--yes", "--json", env=DEAD_DOCKER)
    assert again.returncode == 0
    data = json.loads(again.stdout)
    assert data["created_secrets"] == [] and data["changed_files"] == []
    assert password not in again.stderr


def test_kheops_toml_is_the_source_of_truth(tmp_path):
    site = tmp_path / "site"
    assert run("install", "--dir", str(site), "--no-start", "--yes", "--root-url", "http://h.example:8081",
               env={"KHEOPS_PORTS__KEYCLOAK": "18090", "KHEOPS_PORTS__HTTP": "8081"}).returncode == 0
    toml = (site / "kheops.toml").read_text()
    assert 'root_url = "http://h.example:8081"' in toml and "keycloak = 18090" in toml
    # a later run without flags nor environment reproduces the same files
    before = (site / "docker-compose.yml").read_text()
    result = run("install", "--dir", str(site), "--no-start", "--yes", "--json")
    assert json.loads(result.stdout)["changed_files"] == []
    assert (site / "docker-compose.yml").read_text() == before


def test_admin_password_from_file_and_env(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("a-very-long-admin-pass\n")
    site = tmp_path / "a"
    result = run("install", "--dir", str(site), "--no-start", "--yes", "--admin-password-file", str(pw))
    assert result.returncode == 0, result.stderr
    assert (site / "secrets/keycloak_admin_password").read_text() == "a-very-long-admin-pass\n"
    assert "a-very-long-admin-pass" not in result.stderr + result.stdout
    site = tmp_path / "b"
    result = run("install", "--dir", str(site), "--no-start", "--yes",
                 env={"KHEOPS_ADMIN_PASSWORD": "from-the-environment-1"})
    assert (site / "secrets/keycloak_admin_password").read_text() == "from-the-environment-1\n"
    assert "from-the-environment-1" not in result.stderr


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--root-url", "not a url"], {}, "site.root_url"),
    (["--root-url", "http://host/with/path"], {}, "site.root_url"),
    (["--root-url", "http://host:99999"], {}, "site.root_url"),
    ([], {"KHEOPS_PORTS__HTTP": "eighty"}, "ports.http"),
    ([], {"KHEOPS_PACS__KIND": "pacsman"}, "pacs.kind"),
    ([], {"KHEOPS_SITE__ROTO_URL": "http://x"}, "site.roto_url"),
])
def test_bad_input_writes_nothing(tmp_path, args, env, needle):
    site = tmp_path / "site"
    result = run("install", "--dir", str(site), "--yes", *args, env=env)
    assert_one_line_error(result, needle)
    assert result.returncode == 2
    assert not site.exists()


def test_invalid_value_in_config_file_writes_nothing(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[keycloak]\naccess_token_lifespan = 5\n")
    site = tmp_path / "site"
    result = run("install", "--dir", str(site), "--config", str(cfg), "--yes")
    assert_one_line_error(result, "keycloak.access_token_lifespan")
    assert not site.exists()


def test_unreachable_docker_writes_nothing(tmp_path):
    site = tmp_path / "site"
    result = run("install", "--dir", str(site), "--yes", env=DEAD_DOCKER)
    assert_one_line_error(result, "Docker engine")
    assert result.returncode == 3
    assert not site.exists()


def test_unreadable_admin_password_file(tmp_path):
    site = tmp_path / "site"
    result = run("install", "--dir", str(site), "--no-start", "--yes", "--admin-password-file", str(tmp_path / "x"))
    assert_one_line_error(result, "--admin-password-file")
    assert not site.exists()


def test_down_requires_confirmation_for_purge(tmp_path):
    site = tmp_path / "site"
    assert run("install", "--dir", str(site), "--no-start", "--yes").returncode == 0
    result = run("down", "--dir", str(site), "--purge-data", env=DEAD_DOCKER, stdin="")
    assert_one_line_error(result, "--purge-data")


def test_commands_on_a_missing_site(tmp_path):
    for cmd in ("status", "logs", "down"):
        result = run(cmd, "--dir", str(tmp_path / "nothing"))
        assert_one_line_error(result, "no site")
