"""``kheopsctl restore``: a backup archive back into a running site, in a new directory, here or on another host.

Order (docs/operations.md, "Restore"):
1. read the whole archive once: versions, every checksum, and keep the small site files in memory. A bad
   archive stops here, with nothing written anywhere;
2. check the target (an empty or missing DIR; an existing site only with --force, after a backup of it), the
   project's name is free on this engine, and the disk holds the data;
3. write kheops.toml, the realm and secrets/, render the site (install --no-start), start PostgreSQL alone,
   and stream the dumps into pg_restore and the volumes into Docker, in one more read of the archive;
4. start the whole site (install), then doctor.

``--verify`` runs steps 1-3 into a throwaway project (PostgreSQL and the volumes only, nothing published),
compares it with the manifest (Orthanc's index counts, instance counts, an MD5 sample of stored files, the
gateway's row counts) and removes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets as _random
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kheopsctl.errors import KheopsError
from kheopsctl.ops import archive, backup_deploy as deploy
from kheopsctl.ops.backup import ORTHANC_STORAGE, gateway_rows, orthanc_stats
from kheopsctl.ops.backup_docker import PROJECT_LABEL, exec_feed, service_container, write_volume

VOLUME_LABEL = "com.docker.compose.volume"
# the gateway's index of the PACS: written by STOW only, which the backup pauses, so the counts are exact
INDEX_TABLES = ("studies", "series", "instances")
SPACE_FACTOR_DB = 4  # a compressed dump grows this much, at most, back in PostgreSQL (indexes included)
PROJECT_LINE = re.compile(r'^project = ".*"$', re.M)


@dataclass
class RestoreOptions:
    archive: Path
    dir: Path
    identity: Path | None = None
    yes: bool = False
    force: bool = False
    project: str | None = None


@dataclass
class RestoreResult:
    dir: Path
    project: str
    seconds: float
    manifest: dict = field(repr=False)
    previous_backup: Path | None = None
    doctor: dict | None = None
    verified: dict | None = None

    def to_json(self) -> dict:
        return {"dir": str(self.dir), "project": self.project, "seconds": round(self.seconds, 2),
                "from_project": self.manifest.get("project"), "created": self.manifest.get("created"),
                "previous_backup": str(self.previous_backup) if self.previous_backup else None,
                "doctor_healthy": (self.doctor or {}).get("summary", {}).get("healthy"),
                "verified": self.verified}


def read_and_check(path: Path, identity_file: Path | None, notice) -> tuple[dict, dict[str, bytes], object]:
    identity = archive.load_identity(identity_file) if identity_file else None
    notice(f"checking {path.name} (every checksum)…")
    manifest, files = archive.verify(path, identity, collect="site/")
    if "site/kheops.toml" not in files or not any(n.startswith("site/secrets/") for n in files):
        raise archive.ArchiveError(f"{path.name}: no kheops.toml or secrets in it; nothing was changed",
                                   hint="this is not a complete kheopsctl backup")
    return manifest, files, identity


# ---- the real restore ----------------------------------------------------------------------------------------

def run_restore(opts: RestoreOptions, console, notice: Callable[[str], None],
                confirm: Callable[[str], bool]) -> RestoreResult:
    started = time.monotonic()
    path = opts.archive.expanduser().absolute()
    manifest, files, identity = read_and_check(path, opts.identity, notice)
    site_dir = opts.dir.expanduser().absolute()
    client = deploy.docker_client()
    previous = None
    if (site_dir / "kheops.toml").is_file():
        previous = _replace_existing(site_dir, opts, notice, confirm)
    elif site_dir.exists() and any(site_dir.iterdir()):
        raise KheopsError(f"--dir: {site_dir} is not empty and holds no site; restore writes into an empty directory",
                          hint="give a new or empty directory", exit_code=2)
    _check_disk(client, site_dir, manifest)
    settings = _write_site(site_dir, files, opts.project)
    try:
        _check_project_free(client, settings.project)
        restore_data(client, settings, site_dir, path, identity, manifest, notice)
    except BaseException:
        _undo(client, settings, site_dir)
        raise
    notice("starting the site…")
    deploy.install_and_start(site_dir, console)
    doctor = _doctor(site_dir)
    return RestoreResult(dir=site_dir, project=settings.project, seconds=time.monotonic() - started,
                         manifest=manifest, previous_backup=previous, doctor=doctor)


def _replace_existing(site_dir: Path, opts: RestoreOptions, notice, confirm) -> Path:
    if not opts.force:
        raise KheopsError(f"--dir: {site_dir} holds a site; restore never overwrites one by itself",
                          hint="give a new directory, or add --force to back that site up and then replace it",
                          exit_code=2)
    from kheopsctl.ops.backup import BackupOptions, run_backup
    from kheopsctl.ops.sitectx import SiteContext

    if not opts.yes and not confirm(f"Replace the site in {site_dir} (a backup of it is taken first)?"):
        raise KheopsError("not confirmed: nothing was changed", exit_code=1)
    with SiteContext.open(site_dir) as ctx:
        notice(f"backing up the site in {site_dir} before replacing it…")
        taken = run_backup(ctx, BackupOptions(), notice)
        notice(f"  saved {taken.path}")
        deploy.purge(ctx.settings, site_dir)
    for name in ("kheops.toml", ".env", "docker-compose.yml"):
        (site_dir / name).unlink(missing_ok=True)
    shutil.rmtree(site_dir / "secrets", ignore_errors=True)
    return taken.path


def _check_disk(client, site_dir: Path, manifest: dict) -> None:
    dbs = sum(d.get("size", 0) for d in manifest.get("databases", {}).values())
    vols = sum(v.get("size", 0) for v in manifest.get("volumes", {}).values())
    need = dbs * SPACE_FACTOR_DB + vols
    root = Path(client.info().get("DockerRootDir") or "/var/lib/docker")
    probe = root if root.exists() else None  # a remote engine: its disk cannot be measured from here
    if probe is None:
        return
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    if free < need:
        from kheopsctl.ops.backup import _human

        raise KheopsError(f"not enough disk space for Docker's data in {root}: the restore needs about "
                          f"{_human(need)}, {_human(free)} is free; nothing was changed",
                          hint="free space on that disk (docker system prune removes unused images), then retry")


def _write_site(site_dir: Path, files: dict[str, bytes], project: str | None):
    """kheops.toml (with ``project`` when given), the realm and secrets/ (0700/0600); returns the settings."""
    toml = files["site/kheops.toml"].decode()
    if project:
        toml, n = PROJECT_LINE.subn(f'project = "{project}"', toml, count=1)
        if not n:
            toml = f'project = "{project}"\n' + toml
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "secrets").mkdir(mode=0o700, exist_ok=True)
    os.chmod(site_dir / "secrets", 0o700)
    for name, data in files.items():
        rel = name[len("site/"):]
        if rel == "kheops.toml" or ".." in rel.split("/"):
            continue
        mode = 0o600 if rel.startswith("secrets/") else 0o644
        deploy.write_atomic(site_dir / rel, data, mode)
    deploy.write_atomic(site_dir / "kheops.toml", toml, 0o644)
    settings = deploy.load(site_dir)
    if project and settings.project != project:  # KHEOPS_PROJECT in the environment wins over the file
        raise KheopsError(f"--project {project}: KHEOPS_PROJECT={settings.project} in the environment overrides it",
                          hint="unset KHEOPS_PROJECT, or use it alone to name the project", exit_code=2)
    return settings


def _check_project_free(client, project: str) -> None:
    if client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
        raise KheopsError(f"project {project} already runs on this Docker engine",
                          hint="restore under another name (--project NAME), or stop that site first", exit_code=2)
    for suffix in ("pgdata", ORTHANC_STORAGE, "certs"):
        name = f"{project}_{suffix}"
        with contextlib.suppress(Exception):
            client.volumes.get(name)
            raise KheopsError(f"volume {name} exists: project {project} still has data on this engine",
                              hint="restore under another name (--project NAME), or remove that site's data "
                                   "(kheopsctl down --purge-data in its directory)", exit_code=2)


def _undo(client, settings, site_dir: Path) -> None:
    """A failed restore leaves no half-filled volume behind (the site files stay, for a retry)."""
    if (site_dir / "docker-compose.yml").is_file():
        with contextlib.suppress(Exception):
            deploy.compose(settings, site_dir, "down", "--volumes", "--remove-orphans")
    for suffix in ("pgdata", ORTHANC_STORAGE, "certs"):
        with contextlib.suppress(Exception):
            client.volumes.get(f"{settings.project}_{suffix}").remove(force=True)


def _doctor(site_dir: Path, attempts: int = 4, pause: float = 10.0) -> dict:
    # a Keycloak that has just become healthy can still be slow to answer its admin API on a busy host
    for attempt in range(attempts):
        document = deploy.doctor_document(site_dir)
        if document["summary"]["healthy"]:
            return document
        if attempt + 1 < attempts:
            time.sleep(pause)
    if not document["summary"]["healthy"]:
        bad = [c["name"] + ": " + c["message"] for c in document["checks"] if c["status"] in ("fail", "error")]
        raise KheopsError(f"the site was restored but doctor finds problems: {'; '.join(bad)[:300]}",
                          hint=f"run kheopsctl doctor --dir {site_dir} for the fixes")
    return document


# ---- data: databases and volumes ---------------------------------------------------------------------------

def restore_data(client, settings, site_dir: Path, path: Path, identity, manifest: dict, notice) -> None:
    """Render the site, start PostgreSQL alone, and stream every dump and volume of the archive into it."""
    deploy.render_only(site_dir)
    for suffix in ("pgdata", *manifest.get("volumes", {})):
        _compose_volume(client, settings.project, suffix)
    notice("starting PostgreSQL…")
    deploy.compose(settings, site_dir, "up", "-d", "--no-deps", "postgres")
    postgres = _wait_healthy(client, settings.project, "postgres")
    notice("restoring the databases and volumes…")
    _stream_restore(client, settings, postgres, path, identity, manifest, notice)


def _compose_volume(client, project: str, name: str) -> None:
    # labelled as compose labels its own, so compose adopts it instead of warning about a foreign volume
    client.volumes.create(f"{project}_{name}", labels={PROJECT_LABEL: project, VOLUME_LABEL: name})


def _wait_healthy(client, project: str, service: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = service_container(client, project, service, required=False)
        if c is not None:
            c.reload()
            if (c.attrs.get("State", {}).get("Health") or {}).get("Status") == "healthy":
                return c
        time.sleep(1)
    raise KheopsError(f"{service} of {project} did not become healthy within {timeout:.0f} s",
                      hint=f"see docker logs {project}-{service}-1")


class _PipeConsumer:
    """Runs ``consume(chunks)`` in a thread fed by what this object is written to (a bounded OS pipe)."""

    def __init__(self, consume: Callable[[Iterable[bytes]], object]):
        r, w = os.pipe()
        self._r, self.w = os.fdopen(r, "rb", archive.BUFSIZE), os.fdopen(w, "wb", archive.BUFSIZE)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(consume,), daemon=True)
        self._thread.start()

    def _run(self, consume) -> None:
        try:
            consume(iter(lambda: self._r.read(archive.BUFSIZE), b""))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread by close()
            self.error = exc
        finally:
            self._r.close()

    def write(self, data: bytes) -> int:
        return self.w.write(data)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.w.close()
        self._thread.join()
        if self.error is not None:
            raise self.error


def _stream_restore(client, settings, postgres, path: Path, identity, manifest: dict, notice) -> None:
    listed = manifest["members"]
    current: tuple[str, str] | None = None  # ("db", name) or ("volume", name)
    sink: _PipeConsumer | None = None
    tar_out: tarfile.TarFile | None = None

    def close_current() -> None:
        nonlocal sink, tar_out, current
        try:
            if tar_out is not None:
                tar_out.close()
        except BrokenPipeError:
            pass
        if sink is not None:
            sink.close()
        sink, tar_out, current = None, None, None

    def open_db(name: str) -> None:
        nonlocal sink, current
        notice(f"  database {name}")
        cmd = ["pg_restore", "-U", "postgres", "-d", name, "--exit-on-error", "--no-password"]
        sink = _PipeConsumer(lambda chunks: exec_feed(postgres, cmd, chunks, f"pg_restore of {name}"))
        current = ("db", name)

    def open_volume(name: str) -> None:
        nonlocal sink, tar_out, current
        notice(f"  volume {name}")
        volume = f"{settings.project}_{name}"
        sink = _PipeConsumer(lambda chunks: write_volume(client, settings.images.postgres, volume, chunks))
        tar_out = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=archive.BUFSIZE)
        current = ("volume", name)

    try:
        with archive.open_archive(path, identity) as stream:
            for info, data in archive.members(stream, path):
                parts = info.name.split("/")
                if parts[0] == "db" and len(parts) == 2:
                    db = parts[1].split(".pgdump.")[0]
                    if current != ("db", db):
                        close_current()
                        open_db(db)
                    _copy_checked(info, data, sink, listed)
                elif parts[0] == "volumes" and len(parts) >= 2:
                    if current != ("volume", parts[1]):
                        close_current()
                        open_volume(parts[1])
                    rel = "/".join(parts[2:]) or "."
                    clone = tarfile.TarInfo(rel)
                    for attr in ("size", "mode", "type", "linkname", "uid", "gid", "uname", "gname", "mtime"):
                        setattr(clone, attr, getattr(info, attr))
                    tar_out.addfile(clone, _Checked(info, data, listed) if data is not None else None)
                else:
                    close_current()
            close_current()
    except BrokenPipeError:
        if sink is not None:
            sink.close()  # raises why the consumer (pg_restore, Docker) stopped reading
        raise
    finally:
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()


class _Checked:
    """Reads a member and checks its SHA-256 against the manifest once it has been read whole."""

    def __init__(self, info, data, listed):
        import hashlib

        self.info, self.data, self.sha, self.left = info, data, hashlib.sha256(), info.size
        self.expected = (listed.get(info.name) or {}).get("sha256")

    def read(self, n: int = -1) -> bytes:
        chunk = self.data.read(n)
        self.sha.update(chunk)
        self.left -= len(chunk)
        if self.left <= 0 and self.sha.hexdigest() != self.expected:
            raise archive.ArchiveError(f"{self.info.name} changed since it was checked",
                                       hint="the archive file is being modified; copy it somewhere safe first")
        return chunk


def _copy_checked(info, data, sink, listed) -> None:
    reader = _Checked(info, data, listed)
    while True:
        chunk = reader.read(archive.BUFSIZE)
        if not chunk:
            break
        sink.write(chunk)
    if info.size == 0:
        reader.left = 0
        reader.read(0)


# ---- --verify ------------------------------------------------------------------------------------------------

def run_verify(archive_path: Path, identity_file: Path | None, notice: Callable[[str], None]) -> dict:
    """Restore the data into a throwaway project, compare it with the manifest, remove it. Raises on a mismatch."""
    path = archive_path.expanduser().absolute()
    manifest, files, identity = read_and_check(path, identity_file, notice)
    client = deploy.docker_client()
    _check_disk(client, Path(tempfile.gettempdir()), manifest)
    project = f"kheops-verify-{_random.token_hex(4)}"
    work = Path(tempfile.mkdtemp(prefix="kheops-verify-"))
    settings = None
    try:
        # nothing is started but PostgreSQL, which publishes no port; the site's KHEOPS_* settings in the
        # environment must not steer the throwaway copy onto the real project
        with _without_site_environment():
            settings = _write_site(work / "site", files, project)
            _check_project_free(client, project)
            restore_data(client, settings, work / "site", path, identity, manifest, notice)
            postgres = service_container(client, project, "postgres")
            return compare(client, settings, postgres, manifest, notice)
    finally:
        notice(f"removing the throwaway project {project}…")
        if settings is not None:
            _undo(client, settings, work / "site")
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _without_site_environment():
    from kheopsctl.config import ENV_ALIASES, ENV_PREFIX

    saved = {k: v for k, v in os.environ.items()
             if k in ENV_ALIASES or (k.startswith(ENV_PREFIX) and "__" in k)}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def compare(client, settings, postgres, manifest: dict, notice) -> dict:
    stats = manifest.get("stats", {})
    problems: list[str] = []
    got_rows = gateway_rows(postgres)
    want_rows = stats.get("gateway_rows", {})
    drift = {}
    for table, n in want_rows.items():
        if got_rows.get(table) == n:
            continue
        if table in INDEX_TABLES:
            problems.append(f"gateway table {table}: {got_rows.get(table)} rows, the backup had {n}")
        else:  # counted a moment after the dump while albums, sessions... may change: reported, not a failure
            drift[table] = {"restored": got_rows.get(table), "counted_at_backup": n}
    result = {"gateway_rows": got_rows, "gateway_rows_drift": drift, "md5_checked": 0}
    if "orthanc" in stats:
        got = orthanc_stats(postgres)
        for key, n in stats["orthanc"].items():
            if got.get(key) != n:
                problems.append(f"Orthanc {key}: {got.get(key)}, the backup had {n}")
        result["orthanc"] = got
        sample = stats.get("md5_sample", [])
        if sample:
            md5s = _md5_in_volume(client, settings, [s["uuid"] for s in sample])
            for s in sample:
                if md5s.get(s["uuid"]) != s["md5"]:
                    problems.append(f"stored file {s['uuid']}: MD5 {md5s.get(s['uuid'], 'missing')}, "
                                    f"Orthanc recorded {s['md5']}")
            result["md5_checked"] = len(sample)
    if problems:
        raise KheopsError(f"the restored copy differs from the backup: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                          hint="this backup cannot be trusted: take a new one and verify it")
    notice(f"verified: {sum(got_rows.values())} gateway rows, {result.get('orthanc', {}).get('instances', 0)} "
           f"instances, {result['md5_checked']} MD5 checks")
    return result


def _md5_in_volume(client, settings, uuids: list[str]) -> dict[str, str]:
    paths = [f"/v/{u[0:2]}/{u[2:4]}/{u}" for u in uuids]
    volume = f"{settings.project}_{ORTHANC_STORAGE}"
    out = client.containers.run(settings.images.postgres, ["sh", "-c", 'md5sum "$@" 2>/dev/null; true', "md5", *paths],
                                entrypoint=[], volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True,
                                network_disabled=True)
    found = {}
    for line in out.decode().splitlines():
        md5, _, name = line.partition("  ")
        found[name.rsplit("/", 1)[-1]] = md5
    return found

