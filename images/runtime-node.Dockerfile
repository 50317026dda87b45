# The Node.js runtime image: a generic instance the pool manager specializes
# with a function's code (POST /v2/specialize). server.mjs is a standalone
# node:http server: nothing of Spore's node_modules comes along.
#   docker build -f images/runtime-node.Dockerfile -t ghcr.io/<you>/runtime-node:<version> .
FROM node:22-bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spore-runtime-node" \
      org.opencontainers.image.description="Spore's Node.js runtime (Fission's /v2/specialize contract)" \
      org.opencontainers.image.source="https://github.com/spore-dev/spore" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# tini is PID 1: SIGTERM reaches the server (a pod is deleted at once) and a function's children are reaped
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupmod --new-name spore node \
 && usermod --login spore --home /home/spore --move-home node
COPY dataplane/runtimes/node/server.mjs /runtime/server.mjs
# on every interface of the pod, on Fission's port
ENV HOST=0.0.0.0 \
    PORT=8888 \
    HOME=/home/spore \
    NODE_ENV=production
EXPOSE 8888
USER 1000:1000
ENTRYPOINT ["/usr/bin/tini", "--"]
# --no-memory-reducer: as spore up runs it (NODE_RUNTIME_FLAGS in dataplane/poolmgr/process-provider.ts says why)
CMD ["node", "--no-memory-reducer", "/runtime/server.mjs"]
