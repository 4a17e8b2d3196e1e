# Keycloak with its build step done once (Keycloak's "optimized image"), so containers run `start --optimized`.
# Built by kheopsctl install on top of the pinned images.keycloak; only build-time options are set here.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV KC_DB=postgres \
    KC_HEALTH_ENABLED=true
RUN /opt/keycloak/bin/kc.sh build
