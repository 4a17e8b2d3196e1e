"""Point the running realm at the new root URL and prove it: redirect URIs, web origins, sslRequired=external.

The deploy layer's realm reconciliation (python-keycloak, admin API) does the writing, from the realm rendered
for the new settings; here we read the live values back and refuse to call the switch done unless they are
exactly the new root URL. Keycloak is reached on the site's Docker network: its admin API is never published
in secured modes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kheopsctl.config import Settings
from kheopsctl.deploy import realm_sync
from kheopsctl.deploy.render import realm_context
from kheopsctl.errors import KheopsError
from kheopsctl.site import SiteLayout
from kheopsctl.site.docker import DockerClient

# clients a browser comes back to; the service-account client (kheopsctl) has no redirect URIs
BROWSER_CLIENTS = ("loginConnect",)


@dataclass
class ClientUrls:
    client_id: str
    root_url: str
    redirect_uris: list[str]
    web_origins: list[str]
    post_logout: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def expected(settings: Settings, client_id: str) -> ClientUrls:
    ctx = realm_context(settings)  # the values a fresh install imports
    return ClientUrls(client_id, settings.root_url, list(ctx["redirect_uris"]), list(ctx["web_origins"]),
                      ctx["post_logout"])


def read_back(kc, settings: Settings) -> tuple[list[ClientUrls], str | None]:
    clients = []
    for client_id in BROWSER_CLIENTS:
        internal_id = kc.get_client_id(client_id)
        if internal_id is None:
            raise KheopsError(f"realm {settings.keycloak.realm} has no client {client_id}",
                              hint="run kheopsctl install to re-create it")
        rep = kc.get_client(internal_id)
        clients.append(ClientUrls(client_id, rep.get("rootUrl", ""), rep.get("redirectUris", []),
                                  rep.get("webOrigins", []),
                                  (rep.get("attributes") or {}).get("post.logout.redirect.uris", "")))
    return clients, kc.get_realm(settings.keycloak.realm).get("sslRequired")


def point_realm(docker_client: DockerClient, settings: Settings, layout: SiteLayout) -> list[ClientUrls]:
    """Reconcile the live realm with the rendered one, then verify the URLs and sslRequired by reading back."""
    from keycloak.exceptions import KeycloakError  # python-keycloak takes most of a second to import

    try:
        realm_sync.reconcile(settings, layout, docker_client)
        clients, ssl_required = read_back(realm_sync.admin(settings, layout, docker_client), settings)
    except KeycloakError as exc:
        raise KheopsError(f"Keycloak admin API: {str(exc).splitlines()[0][:200]}",
                          hint="see kheopsctl logs keycloak") from None
    for got in clients:
        if got != expected(settings, got.client_id):
            raise KheopsError(f"Keycloak client {got.client_id} reads back {got.redirect_uris} {got.web_origins}, "
                              f"not {settings.root_url}", hint="see kheopsctl logs keycloak")
    if settings.secured and ssl_required != "external":
        raise KheopsError(f"realm {settings.keycloak.realm} reads back sslRequired={ssl_required!r}, not external",
                          hint="see kheopsctl logs keycloak")
    return clients
