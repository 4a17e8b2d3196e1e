"""The deploy layer behind `install`, `status`, `logs` and `down`.

- layout: the site directory's paths (shared contract)
- secrets: generated, 0600, never overwritten
- sitefile: the commented kheops.toml
- render: every site file from templates/ and realms/, in memory first
- gateway_image / keycloak_image: the images built locally
- compose / provision / progress: Docker Compose driving, health waiting, live view
- realm_sync: reconcile the running realm through the admin API
- install / operate: the pipelines the commands call
"""
