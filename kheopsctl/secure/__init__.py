"""`kheopsctl secure`: TLS for the site, with Let's Encrypt (any ACME server, via certbot) or an own certificate.

preflight/dns/certs check before anything changes; switch runs the transaction (backup, re-render, converge,
issue, realm, health check, rollback); acme issues with certbot; status reports what is served. The `certs`
volume is kheopsctl.site.certs_volume, the material nginx needs there kheopsctl.deploy.tls_material.
"""
