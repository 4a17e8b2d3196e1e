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
        "HttpBindAddress": "127.0.0.1",  # Orthanc >= 1.x ignores unknown keys; RemoteAccessAllowed keeps it local
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
    proc = subprocess.Popen([ORTHANC_BIN, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
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
