"""The deploy layer behind `install`, `status`, `logs` and `down`, standing on kheopsctl.site.

- checks: settings checked against each other and this host before anything is written
- sitefile: the commented kheops.toml
- render: every site file from templates/ and realms/, in memory first
- gateway_image / keycloak_image: the images built locally
- tls_material: the certificate nginx needs on 443 (secured sites)
- provision / progress: compose up, health waiting, live view
- converge: the container half (images, TLS material, compose up) for install, secure and its rollback
- realm_sync: reconcile the running realm through the admin API
- install / operate: the pipelines the commands call
- layout, secrets, fsutil, compose: the old import paths of what now lives in kheopsctl.site
"""
