# syntax=docker/dockerfile:1
# gravixd image: runs as UID 10001, works with a read-only root filesystem; the spool (and the
# default local store) live on a volume at /var/lib/gravixd. See docs/deployment.md.

# --- build: wheels for gravixd (with its cffi C extension) and every dependency ----------
FROM python:3.11-slim-bookworm AS build
# gcc and libc headers compile the native decoder; they stay in this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore keeps this to the package sources (no tests, deploy files or .git).
COPY . .
# With the iceberg extra (pyiceberg, SQLAlchemy, psycopg2): the image serves Iceberg tables.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[iceberg]'

# --- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="gravixd" \
      org.opencontainers.image.description="High-throughput event ingestion daemon: HTTP/TCP to Arrow/Parquet in S3" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID lets Kubernetes' runAsNonRoot verify it without /etc/passwd.
RUN groupadd --system --gid 10001 gravixd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gravixd --no-create-home \
      --shell /usr/sbin/nologin gravixd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/gravixd /var/lib/gravixd/spool

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "$(echo /wheels/gravixd-*.whl)[iceberg]" \
 && rm -rf /wheels

# Container defaults (0.0.0.0 listeners, spool on the volume) as a config file, so env
# vars and a mounted /etc/gravixd (the Helm chart's ConfigMap) still override them.
COPY deploy/container/gravixd.toml /etc/gravixd/gravixd.toml

# Read-only root: no .pyc writes; HOME on the volume.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/gravixd \
    GRAVIXD_CONFIG=/etc/gravixd/gravixd.toml

VOLUME ["/var/lib/gravixd"]
WORKDIR /var/lib/gravixd
USER 10001:10001
EXPOSE 8088 5170 9108

# slim has no curl: a stdlib script asks /livez on the port gravixd is configured with.
COPY deploy/container/healthcheck.py /usr/local/lib/gravixd/healthcheck.py
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/usr/local/lib/gravixd/healthcheck.py"]

# SIGTERM drains (finishes requests, seals, uploads) before exiting; give it
# drain_timeout_seconds plus a margin (docker stop -t 30, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["gravixd"]
CMD ["serve"]
