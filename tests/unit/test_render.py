"""Rendering: the compose file passes `docker compose config -q`, the realm is valid JSON bound to the root URL."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy.compose import compose_command
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.render import TLS_TEMPLATE, render_site
from kheopsctl.deploy.sitefile import _check_roundtrip, render_sitefile
from kheopsctl.errors import KheopsError
from kheopsctl.resources import templates_dir


def render(tmp_path: Path, data: dict) -> tuple[SiteLayout, dict]:
    layout = SiteLayout(tmp_path / "site")
    site = render_site(settings_from_dict(data), layout)
    site.write()
    return layout, yaml.safe_load(layout.compose.read_text())


def compose_config_ok(layout: SiteLayout) -> None:
    result = subprocess.run([*compose_command(), "-f", str(layout.compose), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_default_site_compose_is_valid(tmp_path):
    layout, doc = render(tmp_path, {})
    compose_config_ok(layout)
    services = doc["services"]
    assert set(services) == {"postgres", "keycloak", "orthanc", "gateway", "nginx"}
    for name, svc in services.items():
        assert "healthcheck" in svc and svc["restart"] == "unless-stopped", name
        assert ":" in svc["image"], f"{name} image is not pinned"
    assert doc["networks"]["internal"]["internal"] is True
    assert services["postgres"]["networks"] == ["internal"]
    assert services["orthanc"]["networks"] == ["internal"]
    assert "ports" not in services["postgres"] and "ports" not in services["orthanc"]
    assert services["nginx"]["ports"] == ["127.0.0.1:80:80"]
    assert services["keycloak"]["ports"] == ["127.0.0.1:8080:8080"]
    kc_env = services["keycloak"]["environment"]
    assert kc_env["KC_DB"] == "postgres" and kc_env["KC_HOSTNAME"] == "http://127.0.0.1:8080"
    gw_env = services["gateway"]["environment"]
    assert gw_env["KHEOPS_GW_PACS_URL"] == "http://orthanc:8042/dicom-web"
    assert gw_env["KHEOPS_GW_OIDC_ISSUER"] == "http://127.0.0.1:8080/realms/kheops"
    assert gw_env["KHEOPS_GW_OIDC_JWKS_URL"] == "http://keycloak:8080/realms/kheops/protocol/openid-connect/certs"
    assert set(doc["volumes"]) == {"pgdata", "orthanc-data", "gateway-socket"}
    # nginx reaches the gateway through its Unix socket: only those two mount that volume, nginx read-only
    mounts = {name: [v for v in svc.get("volumes", []) if v.startswith("gateway-socket:")]
              for name, svc in services.items()}
    assert mounts == {"postgres": [], "keycloak": [], "orthanc": [], "gateway": ["gateway-socket:/run/kheops-socket"],
                      "nginx": ["gateway-socket:/run/kheops-socket:ro"]}
    assert gw_env["KHEOPS_GW_LISTEN_SOCKET"] == "/run/kheops-socket/gateway.sock"
    assert gw_env["KHEOPS_GW_WEBHOOK_ALLOWED_NETWORKS"] == ""  # webhooks: the public internet only by default
    assert gw_env["KHEOPS_GW_FORWARDED_ALLOW_IPS"] == "*"  # safe only because nginx replaces the header:
    for template in ("nginx/kheops.conf.j2", "nginx/tls.conf.j2"):
        text = (templates_dir() / template).read_text()
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in text, template
        assert "$proxy_add_x_forwarded_for" not in text, template
    # no secret value ever lands in the compose file
    text = layout.compose.read_text()
    assert "PASSWORD:" not in text.replace("PASSWORD_FILE:", "")


def test_nginx_streams_and_accepts_large_uploads(tmp_path):
    layout, _ = render(tmp_path, {})
    conf = layout.nginx_conf.read_text()
    for needle in ("client_max_body_size 20g;", "proxy_request_buffering off;", "proxy_buffering off;",
                   "location /api/", "location /health/", "server unix:/run/kheops-socket/gateway.sock",
                   "proxy_pass http://kheops_gateway;"):
        assert needle in conf


def test_realm_is_json_bound_to_root_url_without_wildcards(tmp_path):
    layout, _ = render(tmp_path, {"site": {"root_url": "http://kheops.test:8081"}})
    realm = json.loads(layout.realm.read_text())
    assert realm["realm"] == "kheops" and realm["bruteForceProtected"] is True
    assert realm["accessTokenLifespan"] == 300 and realm["registrationAllowed"] is False
    clients = {c["clientId"]: c for c in realm["clients"]}
    ui = clients["loginConnect"]
    assert ui["publicClient"] is True and ui["standardFlowEnabled"] and not ui["directAccessGrantsEnabled"]
    for uri in ui["redirectUris"] + ui["webOrigins"]:
        assert uri not in ("*", "+", "/*") and uri.startswith("http://kheops.test:8081"), uri
    assert "kheops" in ui["defaultClientScopes"] and "basic" in ui["defaultClientScopes"]
    mapper = next(m for m in ui["protocolMappers"] if m["config"].get("claim.name") == "act.sub")
    assert mapper["config"]["user.session.note"] == "IMPERSONATOR_ID"
    ctl = clients["kheopsctl"]
    assert ctl["serviceAccountsEnabled"] and not ctl["publicClient"] and not ctl["standardFlowEnabled"]
    # the secret is substituted by Keycloak from the environment, never written to the file
    assert ctl["secret"] == "${KHEOPS_CLIENT_KHEOPSCTL_SECRET}"
    # listing client scopes would drop Keycloak's built-in ones (and `sub` from tokens)
    assert "clientScopes" not in realm


def test_config_change_touches_only_the_affected_service_label(tmp_path):
    _, before = render(tmp_path / "a", {})
    _, after = render(tmp_path / "b", {"keycloak": {"access_token_lifespan": 600}})
    label = "org.kheops.config-hash"
    changed = {n for n in before["services"]
               if before["services"][n].get("labels", {}).get(label) != after["services"][n].get("labels", {}).get(label)}
    assert changed == {"keycloak"}
    same = {n for n in before["services"] if before["services"][n] == after["services"][n]}
    assert same == {"postgres", "orthanc", "gateway", "nginx"}


def test_rendering_is_deterministic(tmp_path):
    a, _ = render(tmp_path / "a", {})
    b, _ = render(tmp_path / "b", {})
    assert a.compose.read_text().replace(str(a.dir), "") == b.compose.read_text().replace(str(b.dir), "")


@pytest.mark.parametrize("kind,extra", [
    ("dicomweb", {"url": "https://pacs.example/dicom-web", "username": "kheops", "password_file": "PWFILE"}),
    ("dicomweb", {"url": "http://pacs.example:8042/dicom-web", "bearer_token_file": "PWFILE"}),
    ("dcm4chee", {"url": "http://arc:8080/dcm4chee-arc/aets/KHEOPS/rs"}),
    ("gcp", {"url": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb",
             "bearer_token_file": "PWFILE"}),
])
def test_external_pacs(tmp_path, kind, extra):
    cred = tmp_path / "cred"
    cred.write_text("s3cret\n")
    pacs = {"kind": kind, **{k: (str(cred) if v == "PWFILE" else v) for k, v in extra.items()}}
    layout, doc = render(tmp_path, {"pacs": pacs})
    compose_config_ok(layout)
    assert "orthanc" not in doc["services"] and "orthanc-data" not in doc["volumes"]
    env = doc["services"]["gateway"]["environment"]
    assert env["KHEOPS_GW_PACS_URL"] == extra["url"].rstrip("/")
    if "password_file" in extra:
        assert env["KHEOPS_GW_PACS_USERNAME"] == "kheops"
        assert env["KHEOPS_GW_PACS_PASSWORD_FILE"] == "/run/secrets/pacs_password"
        assert doc["secrets"]["pacs_password"]["file"] == str(cred)
    if "bearer_token_file" in extra:
        assert env["KHEOPS_GW_PACS_BEARER_TOKEN_FILE"] == "/run/secrets/pacs_bearer_token"
    assert "s3cret" not in layout.compose.read_text()


def test_gcp_needs_a_token_file(tmp_path):
    with pytest.raises(KheopsError) as err:
        render(tmp_path, {"pacs": {"kind": "gcp", "url": "https://x.example/dicomWeb"}})
    assert err.value.message.startswith("pacs.bearer_token_file")


def test_secured_site_compose(tmp_path):
    if not (templates_dir() / TLS_TEMPLATE).is_file():
        pytest.fail(f"{TLS_TEMPLATE} (secure area) is missing")
    layout, doc = render(tmp_path, {"site": {"root_url": "https://kheops.test", "mode": "custom"}})
    compose_config_ok(layout)
    nginx = doc["services"]["nginx"]
    assert "127.0.0.1:443:443" in nginx["ports"]
    assert "certs:/etc/letsencrypt" in nginx["volumes"] and "acme-webroot:/var/www/acme" in nginx["volumes"]
    assert "ports" not in doc["services"]["keycloak"]
    assert doc["services"]["keycloak"]["environment"]["KC_HOSTNAME"] == "https://kheops.test"
    assert doc["services"]["keycloak"]["environment"]["KC_PROXY_HEADERS"] == "xforwarded"


def test_sitefile_roundtrips_and_is_commented(tmp_path):
    s = settings_from_dict({"ports": {"http": 8081}, "site": {"root_url": "http://h.example:8081"}})
    _check_roundtrip(s)
    text = render_sitefile(s)
    assert text.count("\n# ") > 10 and "http = 8081" in text
