"""Render every site file from the bundled templates, in memory first.

Nothing touches the disk until all of them rendered fine, so a bad setting or a missing template stops the
install with nothing written half-way. Each service gets a label with the hash of the files it mounts, so
``docker compose up`` recreates exactly the services whose configuration changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from kheopsctl.config import Settings
from kheopsctl.deploy.keycloak_image import optimized_keycloak_tag
from kheopsctl.errors import KheopsError
from kheopsctl.site import SiteLayout, secrets
from kheopsctl.site.fsutil import write_atomic
from kheopsctl.resources import realms_dir, templates_dir

TLS_TEMPLATE = "nginx/tls.conf.j2"
INSECURE_TEMPLATE = "nginx/kheops.conf.j2"
SCRIPTS = ("postgres-entrypoint.sh", "postgres-init.sh", "orthanc-entrypoint.sh", "keycloak-entrypoint.sh")


@dataclass
class RenderedSite:
    files: dict[Path, str] = field(default_factory=dict)  # path -> content
    modes: dict[Path, int] = field(default_factory=dict)

    def add(self, path: Path, content: str, mode: int = 0o644) -> None:
        self.files[path] = content
        self.modes[path] = mode

    def write(self) -> list[Path]:
        """Write every file atomically; returns those whose content changed."""
        return [p for p, c in self.files.items() if write_atomic(p, c, self.modes[p])]


def _env(*dirs: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def render_site(settings: Settings, layout: SiteLayout, site_id: str | None = None) -> RenderedSite:
    """Every file of the site, in memory. ``site_id`` labels its containers, networks and volumes (default:
    the id recorded in the directory)."""
    if site_id is None:
        site_id = layout.site_id_file.read_text().strip() if layout.site_id_file.is_file() else ""
    env = _env(templates_dir())
    site = RenderedSite()

    scripts = {name: (templates_dir() / "scripts" / name).read_text() for name in SCRIPTS}
    for name, text in scripts.items():
        site.add(layout.scripts_dir / name, text, 0o644)

    nginx = render_nginx(settings, env)
    site.add(layout.nginx_conf, nginx)
    realm = render_realm(settings)
    site.add(layout.realm, realm)
    orthanc = env.get_template("orthanc.json.j2").render(s=settings) if settings.pacs.kind == "orthanc" else ""
    if orthanc:
        json.loads(orthanc)  # a template bug must not reach Orthanc
        site.add(layout.orthanc_conf, orthanc)

    hashes = {
        "postgres": _sha(scripts["postgres-entrypoint.sh"], scripts["postgres-init.sh"]),
        "keycloak": _sha(realm, scripts["keycloak-entrypoint.sh"]),
        "orthanc": _sha(orthanc, scripts["orthanc-entrypoint.sh"]),
        "nginx": _sha(nginx),
    }
    site.add(layout.compose, render_compose(settings, env, hashes, site_id))
    return site


def render_nginx(settings: Settings, env: jinja2.Environment) -> str:
    name = TLS_TEMPLATE if settings.secured else INSECURE_TEMPLATE
    if settings.secured and not (templates_dir() / TLS_TEMPLATE).is_file():
        raise KheopsError(f"site.mode is {settings.site.mode!r} but the TLS proxy template {TLS_TEMPLATE} is missing",
                          hint="this kheopsctl build cannot serve TLS yet; set site.mode = \"insecure\"")
    return env.get_template(name).render(s=settings)


def pacs_wiring(settings: Settings) -> dict:
    """How the gateway reaches the PACS, and which credential files become compose secrets."""
    p = settings.pacs
    if p.kind == "orthanc":
        return {"url": "http://orthanc:8042/dicom-web", "username": "kheops",
                "password_secret": "kheops_pacs_http_pass", "token_secret": "", "files": {}}
    files: dict[str, str] = {}
    wiring = {"url": p.url.rstrip("/"), "username": p.username, "password_secret": "", "token_secret": ""}
    if p.password_file:
        wiring["password_secret"] = "pacs_password"
        files["pacs_password"] = _user_file(p.password_file, "pacs.password_file")
    if p.bearer_token_file:
        wiring["token_secret"] = "pacs_bearer_token"
        files["pacs_bearer_token"] = _user_file(p.bearer_token_file, "pacs.bearer_token_file")
    if p.kind == "gcp" and not p.bearer_token_file:
        raise KheopsError("pacs.bearer_token_file: required when pacs.kind is 'gcp'",
                          hint="give a file holding an OAuth access token of the service account", exit_code=2)
    if p.kind == "dcm4chee" and "/rs" not in p.url:
        raise KheopsError(f"pacs.url: {p.url!r} does not look like a dcm4chee DICOMweb URL",
                          hint="dcm4chee serves DICOMweb under http://HOST:8080/dcm4chee-arc/aets/AET/rs",
                          exit_code=2)
    wiring["files"] = files
    return wiring


def _user_file(path: str, key: str) -> str:
    resolved = Path(path).expanduser().absolute()
    if not resolved.is_file():
        raise KheopsError(f"{key}: {resolved} does not exist", hint="give the path of an existing file", exit_code=2)
    return str(resolved)


def render_compose(settings: Settings, env: jinja2.Environment, hashes: dict[str, str], site_id: str = "") -> str:
    pacs = pacs_wiring(settings)
    secret_files = {name: f"./secrets/{name}" for name in secrets.ALL}
    if settings.pacs.kind != "orthanc":
        del secret_files["kheops_pacs_http_pass"]
    secret_files.update(pacs["files"])
    gateway_secrets = ["kheops_authdb_pass", "kheops_metrics_token", "kheops_client_web_secret"]
    gateway_secrets += [n for n in (pacs["password_secret"], pacs["token_secret"]) if n]
    return env.get_template("docker-compose.yml.j2").render(
        s=settings, hashes=hashes, site_id=site_id, pacs=pacs, secret_files=secret_files, gateway_secrets=gateway_secrets,
        keycloak_image=optimized_keycloak_tag(settings))


def realm_context(settings: Settings) -> dict:
    root = settings.root_url
    return {
        "realm": settings.keycloak.realm,
        "root_url": root,
        # bound to the site: its pages and nothing else, never a bare wildcard
        "redirect_uris": [f"{root}/*"],
        "web_origins": [root],
        "post_logout": f"{root}/*",
        "access_token_lifespan": settings.keycloak.access_token_lifespan,
    }


def render_realm(settings: Settings) -> str:
    text = _env(realms_dir()).get_template("kheops-realm.json.j2").render(**realm_context(settings))
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:  # a template bug, not user input
        raise KheopsError(f"rendered realm is not valid JSON: {exc}") from None
    return text
