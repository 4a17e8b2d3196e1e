"""A throwaway Orthanc (Debian package) with the DICOMweb plugin, on a free loopback port.

SQLite index and storage live in a temporary directory; the config JSON is written here. Session scoped:
tests share one Orthanc and tell their data apart by UIDs. If the binary is missing the fixture FAILS (no skip).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ORTHANC_BIN = os.environ.get("KHEOPS_TEST_ORTHANC_BIN", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OrthancService:
    base_url: str          # http://127.0.0.1:PORT
    workdir: Path
    process: subprocess.Popen

    @property
    def dicomweb_url(self) -> str:
        return self.base_url + "/dicom-web"

    def rest(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=30, **kw)

    def instance_ids(self) -> set[str]:
        return set(self.rest("/instances").json())

    def statistics(self) -> dict:
        return self.rest("/statistics").json()

    def snapshot(self) -> tuple[frozenset[str], int, int]:
        """What tests compare before/after an attack: instance ids, instance count and disk size."""
        stats = self.statistics()
        return frozenset(self.instance_ids()), int(stats["CountInstances"]), int(stats["TotalDiskSize"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# Orthanc 1.10 has no bind-address setting and listens on every interface. Test servers must stay on
# loopback, so a tiny LD_PRELOAD shim turns its bind(INADDR_ANY / in6addr_any) into a loopback bind.
_LOOPBACK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a; memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a; memcpy(&a, addr, sizeof a);
        if (!memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr)) {
            a.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


def loopback_shim(workdir: Path) -> Path:
    """Compile the bind() shim (gcc); raises if it cannot, so a test never runs Orthanc on every interface."""
    so = workdir / "libloopbackbind.so"
    if so.exists():
        return so
    src = workdir / "loopbackbind.c"
    src.write_text(_LOOPBACK_SHIM)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("gcc is needed to keep the test Orthanc on loopback (apt-get install gcc)")
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(so), str(src), "-ldl"], check=True,
                   capture_output=True)
    return so


def _plugin() -> str:
    for p in DICOMWEB_PLUGIN_CANDIDATES:
        if Path(p).exists():
            return p
    raise RuntimeError("Orthanc DICOMweb plugin not found: apt-get install orthanc-dicomweb")


def start_orthanc(workdir: Path, *, http_port: int | None = None) -> OrthancService:
    if not Path(ORTHANC_BIN).exists():
        raise RuntimeError(f"Orthanc not found at {ORTHANC_BIN}: apt-get install orthanc orthanc-dicomweb")
    workdir.mkdir(parents=True, exist_ok=True)
    port = http_port or free_port()
    config = {
        "Name": "kheops-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "HttpServerEnabled": True,
        "HttpThreadsCount": 16,
        "KeepAlive": True,
        "ConcurrentJobs": 2,
        "StorageCompression": False,
        "Plugins": [_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                     "Host": f"127.0.0.1:{port}", "Ssl": False, "StudiesMetadata": "Full",
                     "SeriesMetadata": "Full"},
    }
    cfg = workdir / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = open(workdir / "orthanc.log", "wb")
    env = dict(os.environ, LD_PRELOAD=str(loopback_shim(workdir)))
    proc = subprocess.Popen([ORTHANC_BIN, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    svc = OrthancService(f"http://127.0.0.1:{port}", workdir, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({proc.returncode}); see {workdir / 'orthanc.log'}")
        try:
            if httpx.get(svc.base_url + "/system", timeout=1).status_code == 200:
                return svc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    svc.stop()
    raise RuntimeError(f"Orthanc did not answer on port {port} within 30 s")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> OrthancService:
    svc = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield svc
    svc.stop()
    shutil.rmtree(svc.workdir, ignore_errors=True)
