"""Files in the site's `certs` and `acme-webroot` volumes, written and read through a throwaway container.

Going through the engine (not /var/lib/docker) works with any storage driver and with a remote engine. The
helper container uses the site's nginx image, which is present wherever the site runs.

Layout of the `certs` volume (mounted at /etc/letsencrypt in nginx and certbot):
  live/HOST/, archive/, renewal/   certbot's own lineage (Let's Encrypt mode)
  kheops/bootstrap/                self-signed certificate so nginx can start before issuance
  kheops/custom/                   copy of the operator's own certificate (custom mode)
  kheops/current -> one of the above; the only path nginx reads
  kheops/renewed                   touched by certbot's deploy hook; nginx's wrapper reloads when it changes
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time

import docker.errors

from kheopsctl.errors import KheopsError
from kheopsctl.site import labels
from kheopsctl.site.installed import Site

CERTS_MOUNT = "/etc/letsencrypt"
WEBROOT_MOUNT = "/var/www/acme"
CURRENT = "kheops/current"
RENEWED_MARKER = f"{CERTS_MOUNT}/kheops/renewed"

def ensure_volume(site: Site, name: str) -> str:
    """The compose volume ``name``, created with compose's labels and the site's id when missing (so compose
    adopts it and it is known as this site's)."""
    full = site.volume_name(name)
    try:
        site.docker.volumes.get(full)
    except docker.errors.NotFound:
        site.docker.volumes.create(full, labels={labels.PROJECT: site.settings.project, labels.VOLUME: name,
                                                 labels.SITE_ID: site.site_id})
    return full


def _helper(site: Site, command: list[str] | None = None):
    mounts = {ensure_volume(site, "certs"): {"bind": CERTS_MOUNT, "mode": "rw"},
              ensure_volume(site, "acme-webroot"): {"bind": WEBROOT_MOUNT, "mode": "rw"}}
    return site.docker.containers.create(
        site.settings.images.nginx, command=command or ["true"], entrypoint=[], volumes=mounts,
        name=f"{site.settings.project}-secure-helper-{secrets.token_hex(4)}",
        labels={"org.kheops.role": "secure-helper", labels.SITE_ID: site.site_id}, network_mode="none", user="0:0",
    )


def put_files(site: Site, base: str, files: dict[str, tuple[bytes, int]],
              links: dict[str, str] | None = None, dirs: dict[str, int] | None = None) -> None:
    """Write ``files`` (relative path -> (content, mode)) and symlinks (path -> target) under ``base``.

    A symlink is replaced atomically by the tar extraction (unlink + create), which nginx never sees half-done
    because it only reads the files at (re)load time.
    """
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, mode in (dirs or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, now
            tar.addfile(info, io.BytesIO(content))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, now
            tar.addfile(info)
    container = _helper(site)
    try:
        if not container.put_archive(base, buf.getvalue()):
            raise KheopsError(f"could not write into the {base} volume", hint="check the Docker engine's logs")
    finally:
        container.remove(force=True)


def run_in_volumes(site: Site, script: str) -> tuple[int, bytes]:
    """Run ``sh -c script`` with both volumes mounted; returns (exit code, output)."""
    container = _helper(site, ["/bin/sh", "-c", script])
    try:
        container.start()
        code = container.wait(timeout=60).get("StatusCode", 1)
        return code, container.logs(stdout=True, stderr=True)
    finally:
        container.remove(force=True)


def read_file(site: Site, path: str) -> bytes | None:
    """Content of ``path`` (symlinks followed), or None when it does not exist."""
    code, out = run_in_volumes(site, f"test -f '{path}' && cat '{path}'")
    return out if code == 0 else None


def point_current(site: Site, target: str) -> None:
    """Point kheops/current at ``target`` (relative to kheops/, e.g. "bootstrap" or "../live/HOST")."""
    put_files(site, CERTS_MOUNT, {}, links={CURRENT: target}, dirs={"kheops": 0o755})


def install_pair(site: Site, name: str, fullchain: bytes, privkey: bytes) -> None:
    """Write kheops/NAME/{fullchain,privkey}.pem (key 0600, read by nginx's master process only)."""
    put_files(site, CERTS_MOUNT,
              {f"kheops/{name}/fullchain.pem": (fullchain, 0o644), f"kheops/{name}/privkey.pem": (privkey, 0o600)},
              dirs={"kheops": 0o755, f"kheops/{name}": 0o700})


def place_token(site: Site, token: str, content: str):
    """Publish an http-01 style token in the webroot; returns the cleanup callable."""
    rel = f".well-known/acme-challenge/{token}"
    put_files(site, WEBROOT_MOUNT, {rel: (content.encode(), 0o644)},
              dirs={".well-known": 0o755, ".well-known/acme-challenge": 0o755})

    def cleanup() -> None:
        run_in_volumes(site, f"rm -f '{WEBROOT_MOUNT}/{rel}'")

    return cleanup
