"""Rendering, security side: the gateway has no way in around nginx, Keycloak never runs as root and gets its
secrets without root, and the values compose copies into Keycloak survive compose's .env parsing."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import yaml

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy import secrets
from kheopsctl.deploy.compose import compose_command
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.render import render_site
from kheopsctl.resources import templates_dir


def render(tmp_path: Path, data: dict) -> tuple[SiteLayout, dict]:
    layout = SiteLayout(tmp_path / "site")
    render_site(settings_from_dict(data), layout).write()
    return layout, yaml.safe_load(layout.compose.read_text())


def test_gateway_tcp_listens_on_loopback_only_and_nginx_uses_the_socket(tmp_path):
    layout, doc = render(tmp_path, {})
    gw = doc["services"]["gateway"]
    env = gw["environment"]
    # the forwarded headers are believed from any peer: that is safe only because no other peer can connect
    assert env["KHEOPS_GW_FORWARDED_ALLOW_IPS"] == "*"
    assert env["KHEOPS_GW_LISTEN_HOST"] == "127.0.0.1"
    assert env["KHEOPS_GW_LISTEN_SOCKET"] == "/run/kheops-socket/gateway.sock"
    assert "ports" not in gw and "expose" not in gw
    # the probe that needs TCP runs inside the container
    assert "http://127.0.0.1:8000/" in " ".join(gw["healthcheck"]["test"])
    conf = layout.nginx_conf.read_text()
    assert "unix:/run/kheops-socket/gateway.sock" in conf
    assert "gateway:8000" not in conf and ":8000" not in conf
    # only nginx and the gateway share the socket's volume
    sharing = {n for n, svc in doc["services"].items()
               if any(str(v).startswith("gateway-socket:") for v in svc.get("volumes", []))}
    assert sharing == {"gateway", "nginx"}


def test_published_metrics_keep_their_listener(tmp_path):
    _, doc = render(tmp_path, {"ports": {"metrics": 9191}})
    gw = doc["services"]["gateway"]
    assert gw["ports"] == ["127.0.0.1:9191:9090"]
    # the metrics server gets the non-loopback listener; the API's port stays on the container's loopback
    assert gw["environment"]["KHEOPS_GW_METRICS_HOST"] == "0.0.0.0"
    assert gw["environment"]["KHEOPS_GW_LISTEN_HOST"] == "127.0.0.1"


def test_keycloak_runs_as_its_image_user_with_secrets_it_can_read(tmp_path):
    _, doc = render(tmp_path, {})
    kc = doc["services"]["keycloak"]
    assert kc["user"] == "1000"
    mounted = {m["target"]: m for m in kc["secrets"]}
    assert set(mounted) == set(secrets.KEYCLOAK_SECRETS)
    for name, m in mounted.items():
        # copied in (environment-sourced), owned by uid 1000, readable by it alone
        assert (m["uid"], m["gid"], m["mode"]) == ("1000", "0", 0o400), name
        source = doc["secrets"][m["source"]]
        assert source == {"environment": secrets.compose_env_var(name)}, name
    # every other service keeps the file secrets (root-started entrypoints hand them over)
    assert all(isinstance(s, str) for svc in ("postgres", "orthanc", "gateway")
               for s in doc["services"][svc].get("secrets", []))
    script = (templates_dir() / "scripts" / "keycloak-entrypoint.sh").read_text()
    code = " ".join(line.split("#", 1)[0] for line in script.splitlines()[1:])
    assert not {"setpriv", "su", "gosu", "runuser", "sudo", "chroot"} & set(code.replace(";", " ").split())
    assert 'if [ "$(id -u)" = 0 ]' in script and "exit 1" in script  # a root start is refused, not run


def test_no_secret_value_in_the_compose_file(tmp_path):
    layout, _ = render(tmp_path, {})
    secrets.ensure_all(layout, "an-admin-password-of-some-length")
    text = layout.compose.read_text()
    for name in secrets.ALL:
        assert secrets.read_secret(layout, name) not in text, name


def test_compose_env_is_private_and_parsed_back_exactly_by_compose(tmp_path):
    layout = SiteLayout(tmp_path / "site")
    layout.dir.mkdir()
    hostile = "it's a $HOME ${X} \"quoted\" back\\slash `tick` # not a comment"
    secrets.ensure_all(layout, hostile)
    env_file = layout.dir / secrets.COMPOSE_ENV
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert secrets.write_compose_env(layout) is False  # idempotent: a re-run changes nothing
    # compose reads the file the way it reads it for the site: interpolate each variable into a label
    probe = tmp_path / "probe.yml"
    names = {n: secrets.compose_env_var(n) for n in secrets.KEYCLOAK_SECRETS}
    probe.write_text(yaml.safe_dump({"services": {"p": {"image": "scratch", "labels": {
        n: "${" + var + "}" for n, var in names.items()}}}}))
    result = subprocess.run([*compose_command(), "--project-directory", str(layout.dir), "-f", str(probe),
                             "config", "--format", "json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # compose prints its normalised file, where a literal $ is written $$
    labels = {k: v.replace("$$", "$") for k, v in json.loads(result.stdout)["services"]["p"]["labels"].items()}
    assert labels == {n: secrets.read_secret(layout, n) for n in secrets.KEYCLOAK_SECRETS}
    assert labels[secrets.ADMIN_PASSWORD] == hostile
