"""`kheopsctl secure`: TLS for the site, with Let's Encrypt (any ACME server, via certbot) or an own certificate.

preflight/dns/certs check before anything changes; switch runs the transaction (backup, re-render, converge,
issue, realm, health check, rollback); material/volumes manage the `certs` volume; status reports what is served.
"""
