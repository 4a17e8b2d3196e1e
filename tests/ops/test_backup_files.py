"""Where backups are written and which ones retention removes (kheopsctl/ops/backup.py), on a real directory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kheopsctl.errors import KheopsError
from kheopsctl.ops.backup import _target, apply_retention, backup_name


def test_retention_keeps_the_newest_of_this_project_only(tmp_path):
    start = datetime(2026, 11, 1, 2, 30, tzinfo=timezone.utc)
    ours = [backup_name("site", start + timedelta(days=d)) for d in range(5)]
    for i, name in enumerate(ours):
        (tmp_path / (name + (".age" if i % 2 else ""))).write_bytes(b"x")
    others = [backup_name("other", start), "notes.txt", "kheops-site-latest.tar", f".{ours[0]}.partial-12"]
    for name in others:
        (tmp_path / name).write_bytes(b"y")
    removed = apply_retention(tmp_path, "site", keep=2)
    assert removed == [ours[0], ours[1] + ".age", ours[2]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([ours[3] + ".age", ours[4]] + others)
    assert apply_retention(tmp_path, "site", keep=2) == []


def test_output_is_a_directory_or_a_new_file(tmp_path):
    when = datetime(2026, 12, 1, 23, 0, 5, tzinfo=timezone.utc)
    made = _target(tmp_path / "new-dir", "site", when, encrypted=True)
    assert made == tmp_path / "new-dir" / "kheops-site-20261201T230005Z.tar.age"
    assert (made.parent.stat().st_mode & 0o777) == 0o700
    assert _target(tmp_path / "one.tar", "site", when, encrypted=False) == tmp_path / "one.tar"
    (tmp_path / "taken.tar").write_bytes(b"old")
    with pytest.raises(KheopsError, match="never overwrites") as e:
        _target(tmp_path / "taken.tar", "site", when, encrypted=False)
    assert e.value.exit_code == 2
    with pytest.raises(KheopsError, match="does not exist"):
        _target(tmp_path / "missing" / "x.tar", "site", when, encrypted=False)
