"""``kheopsctl backup``: one archive holding what a restore needs, taken while reads go on.

Order (see docs/operations.md, "Backup"):
1. Keycloak's database (its own snapshot: pg_dump is one transaction);
2. under the gateway's write lock (uploads answered 503 + Retry-After, reads untouched): the gateway's
   database, Orthanc's index, Orthanc's storage and the statistics a ``restore --verify`` compares with. With
   no STOW in flight, every index row has its file and every gateway row its instance in the PACS;
3. the certificate volume, then the manifest.

Everything streams: ``pg_dump`` and Docker's archive API are read in chunks, hashed and written into the
tar (a dump in bounded parts, see archive.py), and the file appears under its final name (0600) only once
complete and synced.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from kheopsctl.errors import KheopsError
from kheopsctl.ops import archive
from kheopsctl.ops.backup_docker import (WriteLock, exec_stream, psql, read_volume, service_container)
from kheopsctl.ops.sitectx import SiteContext

DATABASES = ("keycloak", "kheops", "orthanc")  # Keycloak first: it does not need the write lock
ORTHANC_STORAGE = "orthanc-data"
CERTS = "certs"
MD5_SAMPLE = 50
NAME_RE = re.compile(r"^kheops-(?P<project>[a-z0-9][a-z0-9_-]*)-(?P<stamp>\d{8}T\d{6}Z)\.tar(\.age)?$")
SPACE_MARGIN = 1.10


@dataclass
class BackupOptions:
    output: Path | None = None  # a file, or a directory for a generated name; default DIR/backups/
    recipient: str | None = None
    keep: int | None = None
    lock_wait_seconds: float = 600


@dataclass
class BackupResult:
    path: Path
    size: int
    seconds: float
    paused_seconds: float
    encrypted: bool
    manifest: dict = field(repr=False)
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        m = self.manifest
        return {"path": str(self.path), "size": self.size, "seconds": round(self.seconds, 2),
                "uploads_paused_seconds": round(self.paused_seconds, 2), "encrypted": self.encrypted,
                "project": m["project"], "kheopsctl": m["kheopsctl"], "created": m["created"],
                "databases": {k: v["size"] for k, v in m["databases"].items()},
                "volumes": m["volumes"], "stats": m["stats"], "removed_by_retention": self.removed}


class Progress:
    """Throttled progress lines on stderr for long steps (one every few seconds, never a flood)."""

    def __init__(self, notice: Callable[[str], None], expected: int, every: float = 3.0):
        self.notice, self.expected, self.every = notice, max(expected, 1), every
        self.done = 0
        self.step = ""
        self._last = time.monotonic()

    def stage(self, step: str) -> None:
        self.step = step
        self.notice(f"{step}…")

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            pct = min(99, 100 * self.done // self.expected)
            self.notice(f"  {self.step}: {_human(self.done)} of ~{_human(self.expected)} ({pct}%)")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def default_dir(ctx: SiteContext) -> Path:
    return ctx.dir / "backups"


def backup_name(project: str, when: datetime) -> str:
    return f"kheops-{project}-{when.strftime('%Y%m%dT%H%M%SZ')}.tar"


def run_backup(ctx: SiteContext, opts: BackupOptions, notice: Callable[[str], None] = lambda _m: None) -> BackupResult:
    started = time.monotonic()
    s = ctx.settings
    recipient = archive.parse_recipient(opts.recipient) if opts.recipient else None
    if opts.keep is not None and opts.keep < 1:
        raise KheopsError("--keep: must be at least 1", hint="--keep 7 keeps the seven newest backups", exit_code=2)
    client = ctx.docker
    postgres = service_container(client, s.project, "postgres")
    embedded = s.pacs.kind == "orthanc"
    now = datetime.now(timezone.utc)
    target = _target(opts.output or default_dir(ctx), s.project, now, recipient is not None)
    expected = _expected_size(postgres, embedded)
    _check_space(target.parent, expected)

    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    progress = Progress(notice, expected)
    paused = 0.0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=archive.BUFSIZE) as out:
            with (archive.encrypting(out, recipient) if recipient else _plain(out)) as sink:
                header = {"project": s.project, "created": now.isoformat(timespec="seconds"),
                          "pacs": s.pacs.kind, "encrypted": recipient is not None}
                writer = archive.ArchiveWriter(sink, header, on_bytes=progress.add)
                _site_files(ctx, writer)
                dumps: dict[str, dict] = {}
                volumes: dict[str, dict] = {}
                progress.stage("dumping Keycloak's database")
                dumps["keycloak"] = _dump(writer, postgres, "keycloak")
                notice("pausing uploads (waiting for those in flight)…")
                with WriteLock(postgres, wait_seconds=opts.lock_wait_seconds):
                    t_lock = time.monotonic()
                    progress.stage("dumping the gateway's database")
                    dumps["kheops"] = _dump(writer, postgres, "kheops")
                    stats = {"gateway_rows": gateway_rows(postgres)}
                    if embedded:
                        progress.stage("dumping Orthanc's index")
                        dumps["orthanc"] = _dump(writer, postgres, "orthanc")
                        stats["orthanc"] = orthanc_stats(postgres)
                        stats["md5_sample"] = md5_sample(postgres)
                        progress.stage("copying Orthanc's storage")
                        volumes[ORTHANC_STORAGE] = _volume(writer, client, s, ORTHANC_STORAGE)
                    paused = time.monotonic() - t_lock
                notice(f"uploads resumed (paused {paused:.1f} s)")
                if s.secured and _volume_exists(client, f"{s.project}_{CERTS}"):
                    progress.stage("copying the certificates")
                    volumes[CERTS] = _volume(writer, client, s, CERTS)
                manifest = writer.finish({
                    "images": dict(vars(s.images)),
                    "secured": s.secured,
                    "site_mode": s.site.mode,
                    "databases": dumps,
                    "volumes": volumes,
                    "stats": stats,
                })
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise KheopsError(f"disk full while writing the backup in {target.parent}; the partial file was removed",
                              hint="free space there, or give --output on a larger disk") from None
        raise KheopsError(f"cannot write the backup {target} ({exc.strerror or exc})",
                          hint="check the output directory and its permissions") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    removed = apply_retention(target.parent, s.project, opts.keep) if opts.keep else []
    return BackupResult(path=target, size=target.stat().st_size, seconds=time.monotonic() - started,
                        paused_seconds=paused, encrypted=recipient is not None, manifest=manifest, removed=removed)


class _plain:
    def __init__(self, out):
        self.out = out

    def __enter__(self):
        return self.out

    def __exit__(self, *exc):
        return False


def _target(output: Path, project: str, when: datetime, encrypted: bool) -> Path:
    output = output.expanduser().absolute()
    if output.is_dir() or not output.suffix:
        output.mkdir(parents=True, exist_ok=True, mode=0o700)
        output = output / (backup_name(project, when) + (".age" if encrypted else ""))
    if output.exists():
        raise KheopsError(f"--output: {output} exists; a backup never overwrites a file",
                          hint="give another name, or a directory to have a dated name made", exit_code=2)
    if not output.parent.is_dir():
        raise KheopsError(f"--output: directory {output.parent} does not exist", hint="create it first", exit_code=2)
    return output


def _check_space(directory: Path, expected: int) -> None:
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < expected * SPACE_MARGIN:
        raise KheopsError(f"not enough disk space in {directory}: the backup needs about {_human(expected)}, "
                          f"{_human(free)} is free; nothing was written",
                          hint="free space there, or give --output on a larger disk")


def _expected_size(postgres, embedded: bool) -> int:
    """Database sizes (an upper bound of the compressed dumps) plus the storage's bytes, from the index."""
    rows = psql(postgres, "postgres", "SELECT coalesce(sum(pg_database_size(datname)), 0) FROM pg_database "
                "WHERE datname IN ('kheops', 'keycloak', 'orthanc')", "measuring the databases")
    total = int(rows[0][0])
    if embedded:
        total += int(psql(postgres, "orthanc", "SELECT coalesce(sum(compressedsize), 0) FROM attachedfiles",
                          "measuring Orthanc's storage")[0][0])
    return total


def _site_files(ctx: SiteContext, writer: archive.ArchiveWriter) -> None:
    layout = ctx.layout
    writer.add_bytes("site/kheops.toml", layout.config.read_bytes(), 0o644)
    if layout.realm.is_file():
        writer.add_bytes("site/realm/kheops-realm.json", layout.realm.read_bytes(), 0o644)
    for path in sorted(layout.secrets_dir.iterdir()):
        if path.is_file():
            writer.add_bytes(f"site/secrets/{path.name}", path.read_bytes(), 0o600)


def _dump(writer: archive.ArchiveWriter, postgres, database: str) -> dict:
    # -Fc: compressed, and pg_restore can recreate owners and privileges exactly
    chunks = exec_stream(postgres, ["pg_dump", "-U", "postgres", "-Fc", "-d", database],
                         f"pg_dump of the {database} database")
    return writer.add_stream(f"db/{database}.pgdump", chunks)


def _volume(writer: archive.ArchiveWriter, client, settings, name: str) -> dict:
    tar = archive.reader_of(read_volume(client, settings.images.postgres, f"{settings.project}_{name}"))
    return writer.add_tree(f"volumes/{name}", tar)


def _volume_exists(client, name: str) -> bool:
    try:
        client.volumes.get(name)
        return True
    except Exception:  # docker.errors.NotFound
        return False


def gateway_rows(postgres) -> dict[str, int]:
    """Exact row counts of every table of the gateway's database (the restore compares them)."""
    tables = [r[0] for r in psql(postgres, "kheops", "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                 "ORDER BY 1", "listing the gateway's tables")]
    if not tables:
        return {}
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM public.\"{t}\"" for t in tables)
    return {name: int(n) for name, n in psql(postgres, "kheops", sql, "counting the gateway's rows")}


ORTHANC_LEVELS = {"0": "patients", "1": "studies", "2": "series", "3": "instances"}


def orthanc_stats(postgres) -> dict[str, int]:
    rows = psql(postgres, "orthanc", "SELECT resourcetype, count(*) FROM resources GROUP BY 1",
                "counting Orthanc's resources")
    stats = {level: 0 for level in ORTHANC_LEVELS.values()}
    stats.update({ORTHANC_LEVELS[k]: int(n) for k, n in rows if k in ORTHANC_LEVELS})
    size = psql(postgres, "orthanc", "SELECT count(*), coalesce(sum(compressedsize), 0) FROM attachedfiles",
                "measuring Orthanc's storage")[0]
    stats["attachments"], stats["storage_bytes"] = int(size[0]), int(size[1])
    return stats


def md5_sample(postgres, n: int = MD5_SAMPLE) -> list[dict]:
    """A random sample of stored files with the MD5 Orthanc recorded when it wrote them."""
    rows = psql(postgres, "orthanc", "SELECT uuid, compressedsize, compressedhash FROM attachedfiles "
                f"WHERE compressedhash <> '' ORDER BY random() LIMIT {int(n)}", "sampling Orthanc's storage")
    return [{"uuid": u, "size": int(size), "md5": md5} for u, size, md5 in rows]


def apply_retention(directory: Path, project: str, keep: int) -> list[str]:
    """Delete this project's oldest backups in ``directory`` beyond the ``keep`` newest (our names only)."""
    ours = sorted((p for p in directory.iterdir() if p.is_file() and (m := NAME_RE.match(p.name))
                   and m["project"] == project), key=lambda p: NAME_RE.match(p.name)["stamp"])
    doomed = ours[:-keep] if len(ours) > keep else []
    for path in doomed:
        path.unlink()
    return [p.name for p in doomed]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
