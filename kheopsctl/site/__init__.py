"""The installed site: the layer every command stands on (cli -> deploy/secure/doctor -> site -> config).

- installed: ``Site`` (settings, layout, lazy Docker client, compose, containers, secrets, address), ``NoSite``
- layout: the paths inside a site directory
- secrets: the ``Secret`` names, generated 0600 files that are never overwritten
- docker: the Docker engine client and Compose v2
- labels: the Docker labels read and written (compose's, and the site's id)
- fsutil: atomic writes
"""

from kheopsctl.site.installed import DATA_VOLUMES, NoSite, Site, expected_services, local_address
from kheopsctl.site.layout import SiteLayout
from kheopsctl.site.secrets import Secret

__all__ = ["DATA_VOLUMES", "NoSite", "Site", "SiteLayout", "Secret", "expected_services", "local_address"]
