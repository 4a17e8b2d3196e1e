"""The README's quick start, run as written in a clean Debian 12 container: the first hour starts there.

The container is the suite's bare Debian bookworm (debootstrap minbase) with python3 added, as on a fresh
Debian 12 server (minbase lacks it; a server install has it). Its system Python is externally managed (PEP 668),
so a plain ``pip install .`` is refused there — that is checked too, or the test would prove nothing. There is
no Docker engine inside the container, so the quick start's last step must end in kheopsctl's own one-line
"Docker unreachable" error (exit 3): the installed command ran, no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
IMAGE = "kheops-test/debian:bookworm"
# this network inspects TLS: pip in the container trusts the host's bundle, as an operator behind such a proxy
# would set up (PIP_CERT is pip's own setting; the commands stay as the README writes them)
CA_BUNDLE = os.environ.get("KHEOPS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def quickstart() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert found, "README.md has no <!-- quickstart --> sh block"
    return found.group(1)


def run_in_debian(script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    # the checkout is copied (not used in place): pip may write into it, and nothing may leak back
    prepare = ("set -e; apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends python3 "
               ">/dev/null; mkdir /src; cd /mnt/src; tar --exclude=./.git --exclude=./.venv --exclude=./kheops "
               "-cf - . | tar -C /src -xf -; cd /src; ")
    return subprocess.run(["docker", "run", "--rm", "-v", f"{REPO}:/mnt/src:ro", "-v", f"{CA_BUNDLE}:/mnt/ca.pem:ro",
                           "-e", "PIP_CERT=/mnt/ca.pem", IMAGE, "bash", "-c",
                           prepare + script], capture_output=True, text=True, timeout=timeout)


def test_the_quick_start_works_as_written_on_debian_12():
    block = quickstart()
    assert "pip install ." in block and "kheopsctl install" in block
    result = run_in_debian(
        # what the README's first line works around: the system pip refuses (PEP 668)
        "if apt-get install -y -q python3-pip >/dev/null && python3 -m pip install . >/tmp/sys-pip.log 2>&1;"
        " then echo SYSTEM-PIP-ACCEPTED; exit 10; fi; grep -q externally-managed /tmp/sys-pip.log; set +e\n"
        # the block exactly as written, in a shell that stops at its first failure, as a user's would
        f"bash -e <<'QUICKSTART'\n{block}QUICKSTART\n"
        "rc=$?; ~/.kheopsctl/bin/kheopsctl --version; ~/.kheopsctl/bin/python -m kheopsctl -V; exit $rc")
    out = result.stdout + result.stderr
    assert "SYSTEM-PIP-ACCEPTED" not in out, "the image no longer shows the PEP 668 refusal"
    assert result.returncode == 3, out[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Docker" in error_lines[0], out[-3000:]
    assert "hint:" in result.stderr and "Traceback" not in out
    version = f"kheopsctl {metadata.version('kheopsctl')}"
    assert result.stdout.splitlines()[-2:] == [version, version], out[-3000:]
