"""Secrets: generated locally, 0700/0600, atomic, never regenerated nor overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kheopsctl.deploy import secrets
from kheopsctl.deploy.fsutil import write_atomic
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.errors import KheopsError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_all_secrets_created_with_modes(tmp_path):
    layout = SiteLayout(tmp_path / "site")
    created = secrets.ensure_all(layout, admin_password=None)
    assert sorted(created) == sorted(secrets.ALL)
    assert mode(layout.secrets_dir) == 0o700
    values = set()
    for name in secrets.ALL:
        path = layout.secret(name)
        assert mode(path) == 0o600, name
        value = path.read_text()
        assert value.endswith("\n") and len(value.strip()) >= 43  # 32 random bytes, base64
        values.add(value)
    assert len(values) == len(secrets.ALL)  # independent values


def test_rerun_keeps_secrets_byte_identical(tmp_path):
    layout = SiteLayout(tmp_path)
    secrets.ensure_all(layout, admin_password="first-password-1234")
    before = {n: layout.secret(n).read_bytes() for n in secrets.ALL}
    inodes = {n: layout.secret(n).stat().st_ino for n in secrets.ALL}
    assert secrets.ensure_all(layout, admin_password="another-password-999") == []
    assert {n: layout.secret(n).read_bytes() for n in secrets.ALL} == before
    assert {n: layout.secret(n).stat().st_ino for n in secrets.ALL} == inodes  # not even rewritten
    assert layout.secret("keycloak_admin_password").read_text() == "first-password-1234\n"


def test_only_missing_secrets_are_created_and_modes_tightened(tmp_path):
    layout = SiteLayout(tmp_path)
    secrets.ensure_all(layout, None)
    kept = layout.secret("kheops_authdb_pass").read_bytes()
    layout.secret("keycloak_db_pass").unlink()
    os.chmod(layout.secret("kheops_authdb_pass"), 0o644)
    assert secrets.ensure_all(layout, None) == ["keycloak_db_pass"]
    assert layout.secret("kheops_authdb_pass").read_bytes() == kept
    assert mode(layout.secret("kheops_authdb_pass")) == 0o600


def test_empty_secret_is_an_error_not_a_silent_regeneration(tmp_path):
    layout = SiteLayout(tmp_path)
    secrets.ensure_secrets_dir(layout)
    layout.secret("postgres_password").write_text("")
    with pytest.raises(KheopsError):
        secrets.ensure_secret(layout, "postgres_password")


def test_read_secret_strips_and_reports_missing(tmp_path):
    layout = SiteLayout(tmp_path)
    secrets.ensure_secret(layout, "kheops_metrics_token", "tok")
    assert secrets.read_secret(layout, "kheops_metrics_token") == "tok"
    with pytest.raises(KheopsError) as err:
        secrets.read_secret(layout, "postgres_password")
    assert "install" in err.value.hint


def test_atomic_write_leaves_no_temp_and_old_content_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    write_atomic(target, "old\n", 0o600)
    assert mode(target) == 0o600

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, "new\n", 0o600)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_reports_unchanged(tmp_path):
    target = tmp_path / "g"
    assert write_atomic(target, "x", 0o644) is True
    ino = target.stat().st_ino
    assert write_atomic(target, "x", 0o644) is False
    assert target.stat().st_ino == ino


def test_generated_values_are_url_and_shell_safe():
    for _ in range(50):
        value = secrets.generate()
        assert value.replace("-", "").replace("_", "").isalnum()
