"""Day-2 operations on an installed site: users, mail, backups.

Every operation opens its site through :mod:`kheopsctl.ops.sitectx`, the one adapter to settings, layout,
secrets and Docker, so the commands stay thin and the deploy packages can change underneath.
"""
