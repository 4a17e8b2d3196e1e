"""The Docker labels kheopsctl reads and writes: compose's own, and the site's id (the one answer to "is this ours?")."""

from __future__ import annotations

# set by docker compose on every container, network and volume of a project
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
VOLUME = "com.docker.compose.volume"
# compose's record of the directory a container was created from (containers only)
WORKING_DIR = "com.docker.compose.project.working_dir"
ONEOFF = "com.docker.compose.oneoff"
# set by kheopsctl's compose file on every container, network and volume of a site: the site's id
# (DIR/.kheopsctl/site-id). A project name can be reused by another directory; this id cannot.
SITE_ID = "org.kheops.site-id"
