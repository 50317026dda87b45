# The Python runtime image: a generic instance the pool manager specializes
# with a function's code (POST /v2/specialize). server.py uses the standard
# library only. Python 3.11 on Debian bookworm, as the platform image's pip:
# the dependencies the reconciler installs for a package fit this interpreter.
#   docker build -f images/runtime-python.Dockerfile -t ghcr.io/<you>/runtime-python:<version> .
FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spore-runtime-python" \
      org.opencontainers.image.description="Spore's Python runtime (Fission's /v2/specialize contract)" \
      org.opencontainers.image.source="https://github.com/spore-dev/spore" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# tini is PID 1: SIGTERM reaches the server (a pod is deleted at once) and a function's children are reaped
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 spore \
 && useradd --uid 1000 --gid 1000 --home-dir /home/spore --create-home spore
COPY dataplane/runtimes/python/server.py /runtime/server.py
# on every interface of the pod, on Fission's port; the root filesystem is read-only: no .pyc files
ENV HOST=0.0.0.0 \
    PORT=8888 \
    HOME=/home/spore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8888
USER 1000:1000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-u", "/runtime/server.py"]
