"""The backup archive: one tar stream, optionally encrypted to an age recipient, checked member by member.

Layout, in this order (a reader learns the versions from the first member and the checksums from the last):

- ``kheops-backup.json``: format number, kheopsctl version, project, creation time;
- ``site/...``: kheops.toml, the rendered realm, secrets/;
- ``db/NAME.pgdump.NNNNNN``: each database as ``pg_dump -Fc``, cut into parts of at most :data:`PART_SIZE`
  (a tar header needs the size up front, and the dump's size is only known at its end: a bounded buffer per
  part is what lets it stream without a temporary file);
- ``volumes/NAME/...``: each data volume, file by file as Docker's archive API gives it;
- ``manifest.json``: everything above with its size and SHA-256, plus versions, image pins and statistics.

The tar is uncompressed: the dumps are compressed by pg_dump and DICOM pixel data hardly compresses, so
gzip would only cost time. Encryption uses the age format (pyrage), so ``age -d`` reads the file too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from kheopsctl.errors import KheopsError

FORMAT = 1
HEADER = "kheops-backup.json"
MANIFEST = "manifest.json"
PART_SIZE = 32 << 20
AGE_MAGIC = b"age-encryption.org/v1"
BUFSIZE = 1 << 20


class ArchiveError(KheopsError):
    """An archive that cannot be used as it is: corrupt, truncated, too new, or undecryptable."""

    exit_code = 2


def kheopsctl_version() -> str:
    return metadata.version("kheopsctl")


def version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if digits != piece:
            break
    return tuple(out)


class _Hashing:
    """A reader that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None] | None = None):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        return data


class ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (Docker's archive and exec streams)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buf))
        target[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def reader_of(chunks: Iterable[bytes]) -> io.BufferedReader:
    return io.BufferedReader(ChunkReader(chunks), BUFSIZE)


class ArchiveWriter:
    """Writes members to a tar stream and remembers each one's size and SHA-256 for the manifest."""

    def __init__(self, out: BinaryIO, header: dict, on_bytes: Callable[[int], None] | None = None):
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFSIZE)
        self.members: dict[str, dict] = {}
        self.on_bytes = on_bytes
        self.header = {"format": FORMAT, "kheopsctl": kheopsctl_version(), **header}
        self.add_bytes(HEADER, json.dumps(self.header, indent=2, sort_keys=True).encode(), 0o600)

    def _info(self, name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        if name in self.members or name == MANIFEST:
            raise ValueError(f"duplicate archive member {name}")
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.type, info.mtime = size, mode, kind, int(time.time())
        return info

    def add_bytes(self, name: str, data: bytes, mode: int = 0o600) -> dict:
        return self.add_file(name, io.BytesIO(data), len(data), mode)

    def add_file(self, name: str, fileobj: BinaryIO, size: int, mode: int = 0o600,
                 template: tarfile.TarInfo | None = None) -> dict:
        info = self._info(name, size, mode)
        if template is not None:  # keep owner and times of a volume's file
            info.uid, info.gid, info.uname, info.gname, info.mtime = (template.uid, template.gid, template.uname,
                                                                    template.gname, template.mtime)
        hashing = _Hashing(fileobj, self.on_bytes)
        self.tar.addfile(info, hashing)
        entry = {"type": "file", "size": hashing.size, "sha256": hashing.sha.hexdigest(), "mode": mode}
        self.members[name] = entry
        return entry

    def add_stream(self, name: str, chunks: Iterable[bytes], part_size: int = PART_SIZE) -> dict:
        """A stream of unknown length (a dump) as parts ``NAME.000000``, ``NAME.000001``...; returns its summary."""
        whole = hashlib.sha256()
        parts: list[str] = []
        total = 0
        buf = bytearray()

        def flush() -> None:
            part = f"{name}.{len(parts):06d}"
            self.add_bytes(part, bytes(buf))
            parts.append(part)

        for chunk in chunks:
            whole.update(chunk)
            total += len(chunk)
            buf += chunk
            while len(buf) >= part_size:
                rest = buf[part_size:]
                del buf[part_size:]
                flush()
                buf = rest
        if buf or not parts:
            flush()
        return {"parts": parts, "size": total, "sha256": whole.hexdigest()}

    def add_tree(self, prefix: str, tar_stream: BinaryIO, strip: int = 1) -> dict:
        """Re-add every member of an inner tar stream (Docker's archive of a directory) under ``prefix``."""
        files = size = 0
        with tarfile.open(fileobj=tar_stream, mode="r|", bufsize=BUFSIZE) as inner:
            for member in inner:
                rel = "/".join(member.name.split("/")[strip:])
                name = f"{prefix}/{rel}" if rel else prefix
                if member.isreg():
                    self.add_file(name, inner.extractfile(member), member.size, member.mode, template=member)
                    files += 1
                    size += member.size
                elif member.isdir() or member.issym():
                    kind = tarfile.DIRTYPE if member.isdir() else tarfile.SYMTYPE
                    info = self._info(name, 0, member.mode, kind)
                    info.linkname, info.uid, info.gid, info.mtime = (member.linkname, member.uid, member.gid,
                                                                     member.mtime)
                    self.tar.addfile(info)
                    self.members[name] = ({"type": "dir", "mode": member.mode} if member.isdir()
                                          else {"type": "symlink", "link": member.linkname})
                # hard links, devices and fifos have no place in a data volume: left out on purpose
        return {"files": files, "size": size}

    def finish(self, manifest: dict) -> dict:
        document = {**self.header, **manifest, "members": self.members}
        data = json.dumps(document, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        self.tar.addfile(info, io.BytesIO(data))
        self.tar.close()
        return document


# ---- encryption --------------------------------------------------------------------------------------------

def parse_recipient(text: str):
    from pyrage import x25519

    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception:  # pyrage raises RecipientError or ValueError depending on the defect
        raise KheopsError(f"--recipient: {text[:20]!r}... is not an age public key",
                          hint="give the age1... line that `age-keygen` printed (public key)", exit_code=2) from None


def load_identity(path: Path):
    from pyrage import x25519

    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as exc:
        raise ArchiveError(f"--identity: cannot read {path} ({exc.strerror})",
                           hint="give the file that holds the AGE-SECRET-KEY-1... line") from None
    keys = [ln for ln in lines if ln.startswith("AGE-SECRET-KEY-")]
    try:
        return x25519.Identity.from_str(keys[0])
    except Exception:
        raise ArchiveError(f"--identity: {path} holds no age secret key",
                           hint="give the file that `age-keygen -o FILE` wrote") from None


class _Pump(threading.Thread):
    """Runs ``fn`` (a pyrage stream call) in a thread; a failure closes ``on_fail`` so the other side stops."""

    def __init__(self, fn: Callable[[], None], on_fail: BinaryIO):
        super().__init__(daemon=True)
        self.fn, self.on_fail, self.error = fn, on_fail, None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self.on_fail.close()


@contextlib.contextmanager
def encrypting(out: BinaryIO, recipient) -> Iterator[BinaryIO]:
    """A sink that age-encrypts everything written to it into ``out``."""
    import pyrage

    r, w = os.pipe()
    reader, writer = os.fdopen(r, "rb", BUFSIZE), os.fdopen(w, "wb", BUFSIZE)
    pump = _Pump(lambda: pyrage.encrypt_io(reader, out, [recipient]), reader)
    pump.start()
    try:
        yield writer
    finally:
        with contextlib.suppress(OSError):
            writer.close()
        pump.join()
        if pump.error is not None:  # the encrypting side stopped (e.g. ENOSPC): its error, not our BrokenPipe
            raise pump.error


@contextlib.contextmanager
def open_archive(path: Path, identity=None) -> Iterator[BinaryIO]:
    """The archive's tar stream, decrypted when it is an age file."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise ArchiveError(f"cannot open {path} ({exc.strerror})", hint="give the path of a backup archive") from None
    with raw:
        magic = raw.read(len(AGE_MAGIC))
        raw.seek(0)
        if magic != AGE_MAGIC:
            yield raw
            return
        if identity is None:
            raise ArchiveError(f"{path.name} is encrypted (age) and no key was given",
                               hint="pass --identity FILE, the age secret key matching the backup's recipient")
        import pyrage

        r, w = os.pipe()
        reader, writer = os.fdopen(r, "rb", BUFSIZE), os.fdopen(w, "wb", BUFSIZE)
        pump = _Pump(lambda: pyrage.decrypt_io(raw, writer, [identity]), writer)
        pump.start()
        try:
            yield reader
        finally:
            reader.close()  # stops the pump if the caller gave up early
            pump.join()
            if pump.error is not None and not isinstance(pump.error, BrokenPipeError):
                # raised here, it replaces the "truncated" error the reader saw when the pump stopped
                raise ArchiveError(f"{path.name} cannot be decrypted: wrong key, or the file is truncated or "
                                   f"corrupt ({type(pump.error).__name__}); nothing was changed",
                                   hint="pass the --identity matching the backup's recipient, or use another backup")


# ---- reading -----------------------------------------------------------------------------------------------

def _bad(path: Path, what: str) -> ArchiveError:
    return ArchiveError(f"{path.name}: {what}; nothing was changed",
                        hint="use another backup (kheopsctl restore --verify tests one), or take a new one")


def check_header(path: Path, header: dict) -> None:
    fmt = header.get("format")
    made_by = str(header.get("kheopsctl", ""))
    if not isinstance(fmt, int):
        raise _bad(path, "no valid backup header")
    if fmt > FORMAT or version_tuple(made_by) > version_tuple(kheopsctl_version()):
        raise ArchiveError(f"{path.name} was made by kheopsctl {made_by} (archive format {fmt}); this is kheopsctl "
                           f"{kheopsctl_version()} (format {FORMAT})",
                           hint="restore it with that kheopsctl version or a newer one (pip install -U kheopsctl)")


def members(stream: BinaryIO, path: Path) -> Iterator[tuple[tarfile.TarInfo, BinaryIO | None]]:
    """Every member of the tar stream with a reader for its data; corrupt tar structure is an ArchiveError."""
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=BUFSIZE) as tar:
            for info in tar:
                yield info, (_Guarded(tar.extractfile(info), path) if info.isreg() else None)
    except (tarfile.TarError, EOFError) as exc:
        raise _bad(path, f"not a complete backup archive ({exc})") from None


class _Guarded:
    """A member's data reader whose tar errors (a file cut in the middle of a member) become ArchiveError."""

    def __init__(self, raw: BinaryIO, path: Path):
        self.raw, self.path = raw, path

    def read(self, n: int = -1) -> bytes:
        try:
            return self.raw.read(n)
        except (tarfile.TarError, EOFError) as exc:
            raise _bad(self.path, f"truncated or corrupt inside a member ({exc})") from None


def verify(path: Path, identity=None, on_bytes: Callable[[int], None] | None = None,
           collect: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """Read the whole archive once: header version, every member's SHA-256 against the manifest.

    Returns the manifest and the content of the (small) members whose name starts with ``collect``, so that a
    restore can write the site files only once everything was checked."""
    seen: dict[str, dict] = {}
    kept: dict[str, bytes] = {}
    manifest = None
    header = None
    with open_archive(path, identity) as stream:
        for info, data in members(stream, path):
            if manifest is not None:
                raise _bad(path, f"member {info.name} after the manifest")
            if info.name == MANIFEST:
                manifest = _json(path, data.read(), "manifest")
                continue
            if header is None:
                if info.name != HEADER:
                    raise _bad(path, "not a kheopsctl backup (no header first)")
                raw = data.read()
                header = _json(path, raw, "header")
                check_header(path, header)
                seen[info.name] = {"type": "file", "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                                   "mode": info.mode & 0o777}
                continue
            if collect and data is not None and info.name.startswith(collect):
                raw = data.read()
                kept[info.name] = raw
                seen[info.name] = {"type": "file", "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
                continue
            seen[info.name] = _entry(info, data, on_bytes)
    if header is None:
        raise _bad(path, "empty or not a backup archive")
    if manifest is None:
        raise _bad(path, "truncated (no manifest at the end)")
    listed = manifest.get("members") or {}
    for name, entry in listed.items():
        got = seen.get(name)
        if got is None:
            raise _bad(path, f"member {name} is missing")
        if entry.get("type") == "file" and (got.get("sha256") != entry.get("sha256")
                                            or got.get("size") != entry.get("size")):
            raise _bad(path, f"checksum mismatch on {name}")
    extra = sorted(set(seen) - set(listed))
    if extra:
        raise _bad(path, f"member {extra[0]} is not in the manifest")
    return manifest, kept


def _entry(info: tarfile.TarInfo, data: BinaryIO | None, on_bytes) -> dict:
    if info.isdir():
        return {"type": "dir", "mode": info.mode}
    if info.issym():
        return {"type": "symlink", "link": info.linkname}
    if data is None:
        return {"type": "other"}
    h = _Hashing(data, on_bytes)
    while h.read(BUFSIZE):
        pass
    return {"type": "file", "size": h.size, "sha256": h.sha.hexdigest(), "mode": info.mode}


def _json(path: Path, raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        raise _bad(path, f"its {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _bad(path, f"its {what} is not a JSON object")
    return value
