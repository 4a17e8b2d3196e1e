# The gateway image, built by kheopsctl install from the bundled package (no registry needed for it).
# Build context (assembled in a temp dir): src/ (the kheopsctl source: package, templates, realms, pyproject),
# extra-ca.pem (optional extra CA bundle, may be empty), gateway-entrypoint.sh.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

# One CA bundle for pip at build time and for outbound TLS at run time: the system's plus the optional extra one
# (TLS-inspecting proxies of hospital networks).
COPY extra-ca.pem /usr/local/share/kheops/extra-ca.pem
RUN set -e; mkdir -p /usr/local/share/kheops; \
    sys=/etc/ssl/certs/ca-certificates.crt; \
    { if [ -f "$sys" ]; then cat "$sys"; fi; \
      cat /usr/local/share/kheops/extra-ca.pem; } > /usr/local/share/kheops/ca-bundle.pem
ENV PIP_CERT=/usr/local/share/kheops/ca-bundle.pem \
    REQUESTS_CA_BUNDLE=/usr/local/share/kheops/ca-bundle.pem \
    SSL_CERT_FILE=/usr/local/share/kheops/ca-bundle.pem \
    KHEOPS_GW_CA_BUNDLE=/usr/local/share/kheops/ca-bundle.pem \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# dependencies first: their layer stays cached while only the kheopsctl source changes
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY src/ /tmp/kheopsctl-src/
RUN pip install --no-deps --no-build-isolation /tmp/kheopsctl-src && rm -rf /tmp/kheopsctl-src \
    && groupadd --system --gid 10001 kheops && useradd --system --uid 10001 --gid kheops --no-create-home kheops

COPY gateway-entrypoint.sh /usr/local/bin/gateway-entrypoint.sh
EXPOSE 8000 9090
# starts as root only to hand the 0600 Docker secrets to the unprivileged user, then drops privileges
ENTRYPOINT ["/bin/sh", "/usr/local/bin/gateway-entrypoint.sh"]
CMD ["kheopsctl", "gateway", "serve"]
