"""The command line and the planned settings, without Docker: usage errors are one line + hint + exit 2, and
the new kheops.toml values are derived from the old ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kheopsctl.config import settings_from_dict
from kheopsctl.errors import KheopsError
from kheopsctl.secure.switch import SecureRequest, plan

from tests import clirun


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return clirun.run("secure", *args)  # in-process; every path in the cases is absolute


@pytest.mark.parametrize("args,fragment", [
    ([], "choose exactly one"),
    (["--letsencrypt", "--status"], "choose exactly one"),
    (["--cert", "a.pem"], "--cert and --key go together"),
    (["--letsencrypt", "--email", "a@b.org"], "--root-url is required"),
    (["--cert", "a.pem", "--key", "b.pem", "--email", "a@b.org"], "only apply to --letsencrypt"),
    (["--status"], "no site in"),
])
def test_usage_errors(tmp_path, args, fragment):
    result = _run(*args, "--dir", str(tmp_path / "nosite"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert any(line.startswith("hint: ") for line in lines[1:]), result.stderr
    assert not (tmp_path / "nosite").exists()


def _old(**site):
    return settings_from_dict({"project": "p", "site": {"root_url": "http://kheops.example.org", **site},
                               "tls": {"email": "old@example.org"}})


def test_plan_letsencrypt():
    new = plan(_old(), SecureRequest("letsencrypt", root_url="https://kheops.example.org/", email="ops@example.org",
                                     staging=True))
    assert new.site.mode == "letsencrypt" and new.root_url == "https://kheops.example.org"
    assert new.tls.acme_server == "https://acme-staging-v02.api.letsencrypt.org/directory" and new.tls.staging
    assert new.tls.email == "ops@example.org"
    assert new.keycloak_public_url == "https://kheops.example.org"
    assert new.issuer == "https://kheops.example.org/realms/kheops"


def test_plan_custom_keeps_the_host_over_https(tmp_path):
    new = plan(_old(), SecureRequest("custom", cert_file=Path("c.pem"), key_file=Path("k.pem")))
    assert new.root_url == "https://kheops.example.org" and new.site.mode == "custom"
    assert Path(new.tls.cert_file).is_absolute()


def test_plan_refuses_http_root_url():
    with pytest.raises(KheopsError) as info:
        plan(_old(), SecureRequest("letsencrypt", root_url="http://kheops.example.org", email="a@b.org"))
    assert info.value.exit_code == 2


def test_environment_pinning_the_root_url_is_refused():
    from kheopsctl.secure.switch import check_environment

    check_environment({"KHEOPS_PORTS__HTTPS": "8443"})
    with pytest.raises(KheopsError) as info:
        check_environment({"KHEOPS_ROOT_URL": "http://127.0.0.1"})
    assert info.value.exit_code == 2 and "unset KHEOPS_ROOT_URL" in info.value.hint


CERTBOT_CHALLENGE_FAILURE = """Saving debug log to /var/log/letsencrypt/letsencrypt.log
Requesting a certificate for kheops.test

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: kheops.test
  Type:   connection
  Detail: Get "http://kheops.test:80/.well-known/acme-challenge/abc": dial tcp 172.24.0.9:80: connect: connection refused

Hint: The Certificate Authority failed to download the temporary challenge files created by Certbot.
Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile for details.
"""


def test_certbot_failure_is_explained():
    from kheopsctl.secure import acme

    settings = settings_from_dict({"site": {"root_url": "https://kheops.test", "mode": "letsencrypt"}})
    assert acme.explain(CERTBOT_CHALLENGE_FAILURE).startswith('Detail: Get "http://kheops.test:80/')
    assert "port 80 reaches it" in acme._hint(CERTBOT_CHALLENGE_FAILURE, settings)
    unreachable = "An unexpected error occurred:\nMax retries exceeded with url: /dir (Caused by NewConnectionError)"
    assert "cannot reach the ACME server" in acme._hint(unreachable, settings)
    assert "--acme-ca-bundle" in acme._hint("SSLError: certificate verify failed: unable to get local issuer", settings)
