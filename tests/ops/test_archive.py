"""The backup archive format (kheopsctl/ops/archive.py) and the restore's refusals of bad archives.

No Docker here: archives are written with the real ArchiveWriter (the code backup uses) from generated
bytes, then damaged the ways files get damaged. The CLI cases run the real ``kheopsctl restore``; each must
fail on one line with a hint, exit non-zero and leave the target directory uncreated.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from pyrage import x25519

from kheopsctl.ops import archive

KHEOPSCTL = str(Path(sys.executable).parent / "kheopsctl")


def _inner_tree() -> io.BytesIO:
    """A tar like Docker's archive API returns for a volume: a top directory, files, a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind in (("v", tarfile.DIRTYPE), ("v/ab", tarfile.DIRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, 0o755
            t.addfile(info)
        for name, data in (("v/ab/cd", os.urandom(5000)), ("v/ab/empty", b"")):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid = len(data), 1000, 1000
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("v/live")
        link.type, link.linkname = tarfile.SYMTYPE, "ab/cd"
        t.addfile(link)
    buf.seek(0)
    return buf


def write_archive(path: Path, header: dict | None = None, recipient=None, dump: bytes | None = None) -> dict:
    dump = dump if dump is not None else os.urandom(300_000)
    with open(path, "wb") as out, (archive.encrypting(out, recipient) if recipient else _same(out)) as sink:
        w = archive.ArchiveWriter(sink, header or {"project": "p"})
        w.add_bytes("site/kheops.toml", b'project = "p"\n', 0o644)
        w.add_bytes("site/secrets/postgres_password", b"secret\n")
        summary = w.add_stream("db/kheops.pgdump", (dump[i:i + 7000] for i in range(0, len(dump), 7000)),
                               part_size=100_000)
        tree = w.add_tree("volumes/orthanc-data", _inner_tree())
        return w.finish({"databases": {"kheops": summary}, "volumes": {"orthanc-data": tree}})


class _same:
    def __init__(self, out):
        self.out = out

    def __enter__(self):
        return self.out

    def __exit__(self, *exc):
        return False


def test_round_trip_checks_every_member(tmp_path):
    path = tmp_path / "b.tar"
    dump = os.urandom(300_000)
    written = write_archive(path, dump=dump)
    manifest, files = archive.verify(path, collect="site/")
    assert manifest == written
    assert files["site/secrets/postgres_password"] == b"secret\n"
    parts = manifest["databases"]["kheops"]["parts"]
    assert parts == [f"db/kheops.pgdump.{i:06d}" for i in range(3)]  # 100 000-byte parts
    # the parts put back together are the dump, byte for byte
    with tarfile.open(path) as t:
        assert b"".join(t.extractfile(p).read() for p in parts) == dump
        names = t.getnames()
        assert names[0] == archive.HEADER and names[-1] == archive.MANIFEST
        assert t.getmember("volumes/orthanc-data/live").linkname == "ab/cd"
        assert t.getmember("volumes/orthanc-data/ab/cd").uid == 1000
    assert manifest["volumes"]["orthanc-data"] == {"files": 2, "size": 5000}
    assert manifest["kheopsctl"] == archive.kheopsctl_version() and manifest["format"] == archive.FORMAT


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy a tar member by member, letting ``change(name, data)`` return other bytes for a member."""
    with tarfile.open(src) as t, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
        for m in t.getmembers():
            data = t.extractfile(m).read() if m.isreg() else None
            if data is not None:
                data = change(m.name, data)
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)


def _refused(path: Path, match: str, identity=None):
    with pytest.raises(archive.ArchiveError, match=match) as e:
        archive.verify(path, identity)
    assert e.value.hint and e.value.exit_code == 2
    return e.value


def test_a_truncated_archive_is_refused(tmp_path):
    path = tmp_path / "b.tar"
    write_archive(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3000, 700):
        short = tmp_path / f"short-{cut}.tar"
        short.write_bytes(data[:cut])
        err = _refused(short, "truncated|not a complete")
        assert "nothing was changed" in err.message


def test_a_flipped_byte_is_a_checksum_mismatch(tmp_path):
    path = tmp_path / "b.tar"
    write_archive(path)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as t:
        member = t.getmember("db/kheops.pgdump.000001")
    data[member.offset_data + 1234] ^= 0xFF  # inside that part's data, the tar structure intact
    bad = tmp_path / "flipped.tar"
    bad.write_bytes(bytes(data))
    _refused(bad, "checksum mismatch on db/kheops.pgdump.000001")


def test_a_wrong_checksum_in_the_manifest_is_refused(tmp_path):
    path = tmp_path / "b.tar"
    write_archive(path)

    def change(name, data):
        if name != archive.MANIFEST:
            return data
        doc = json.loads(data)
        doc["members"]["site/secrets/postgres_password"]["sha256"] = "0" * 64
        return json.dumps(doc).encode()

    _rewrite(path, tmp_path / "wrong.tar", change)
    _refused(tmp_path / "wrong.tar", "checksum mismatch on site/secrets/postgres_password")


def test_members_outside_the_manifest_are_refused(tmp_path):
    path = tmp_path / "b.tar"
    write_archive(path)
    with tarfile.open(path) as t, tarfile.open(tmp_path / "extra.tar", "w", format=tarfile.PAX_FORMAT) as out:
        members = t.getmembers()
        for m in members[:-1]:
            out.addfile(m, t.extractfile(m) if m.isreg() else None)
        sneaked = tarfile.TarInfo("site/secrets/injected")
        sneaked.size = 3
        out.addfile(sneaked, io.BytesIO(b"bad"))
        out.addfile(members[-1], t.extractfile(members[-1]))
    _refused(tmp_path / "extra.tar", "site/secrets/injected is not in the manifest")


def test_an_archive_from_a_newer_kheopsctl_is_refused(tmp_path):
    path = tmp_path / "b.tar"
    write_archive(path)

    def newer(name, data):
        if name in (archive.HEADER, archive.MANIFEST):
            doc = json.loads(data)
            doc["kheopsctl"] = "99.1.0"
            return json.dumps(doc).encode()
        return data

    _rewrite(path, tmp_path / "newer.tar", newer)
    err = _refused(tmp_path / "newer.tar", "made by kheopsctl 99.1.0")
    assert "newer" in err.hint


def test_not_a_backup(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    _refused(junk, "not a complete backup archive|empty")
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as t:
        info = tarfile.TarInfo("etc/passwd")
        info.size = 4
        t.addfile(info, io.BytesIO(b"root"))
    _refused(other, "no header first")


def test_encrypted_archives_need_the_matching_key(tmp_path):
    key = x25519.Identity.generate()
    path = tmp_path / "b.tar.age"
    written = write_archive(path, recipient=key.to_public())
    assert path.read_bytes().startswith(archive.AGE_MAGIC)
    assert b"project" not in path.read_bytes()  # nothing readable in the clear
    assert archive.verify(path, key)[0] == written
    _refused(path, "encrypted .age. and no key was given")
    _refused(path, "cannot be decrypted", identity=x25519.Identity.generate())
    short = tmp_path / "short.tar.age"
    short.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _refused(short, "cannot be decrypted|truncated", identity=key)


def test_an_age_identity_file_is_read_and_checked(tmp_path):
    key = x25519.Identity.generate()
    good = tmp_path / "key.txt"
    good.write_text(f"# created: now\n# public key: {key.to_public()}\n{key}\n")
    assert str(archive.load_identity(good).to_public()) == str(key.to_public())
    bad = tmp_path / "bad.txt"
    bad.write_text("not a key\n")
    with pytest.raises(archive.ArchiveError, match="holds no age secret key"):
        archive.load_identity(bad)
    with pytest.raises(archive.ArchiveError, match="cannot read"):
        archive.load_identity(tmp_path / "missing.txt")
    with pytest.raises(Exception, match="not an age public key"):
        archive.parse_recipient("age1notakey")


def _restore_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHEOPS_")}
    return subprocess.run([KHEOPSCTL, "restore", *args], capture_output=True, text=True, timeout=120, env=env)


def test_the_restore_command_refuses_bad_archives_and_changes_nothing(tmp_path):
    path = tmp_path / "b.tar"
    write_archive(path)
    data = path.read_bytes()
    key = x25519.Identity.generate()
    cases = {"truncated": data[: len(data) // 2], "flipped": None}
    flipped = bytearray(data)
    with tarfile.open(path) as t:
        flipped[t.getmember("db/kheops.pgdump.000000").offset_data + 10] ^= 1
    cases["flipped"] = bytes(flipped)
    for label, content in cases.items():
        bad = tmp_path / f"{label}.tar"
        bad.write_bytes(content)
        target = tmp_path / f"site-{label}"
        r = _restore_cli(str(bad), "--dir", str(target), "--yes")
        assert r.returncode == 2, (label, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("checking")]
        assert lines[0].startswith("error: ") and "nothing was changed" in lines[0], r.stderr
        assert lines[1].startswith("hint: "), r.stderr
        assert "Traceback" not in r.stderr
        assert not target.exists()
    encrypted = tmp_path / "enc.tar.age"
    write_archive(encrypted, recipient=key.to_public())
    r = _restore_cli(str(encrypted), "--dir", str(tmp_path / "site-enc"), "--yes")
    assert r.returncode == 2 and "encrypted" in r.stderr and "--identity" in r.stderr
    assert not (tmp_path / "site-enc").exists()
