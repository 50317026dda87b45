# The platform image: the `spore` command (its entrypoint), which the Platform
# chart runs as `spore reconciler ...` (and, with the dataplane, `spore router`
# and `spore poolmgr`). Built from a clean clone, at the repository's root:
#   docker build -f images/platform.Dockerfile -t ghcr.io/<you>/spore:<version> .

# Build: install, compile lib/, and lay out the package as npm publishes it
# (package.json's "files") with its production dependencies only.
FROM node:22-bookworm-slim AS build
# a C++ toolchain builds better-sqlite3 where no prebuilt binary fits the platform
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
# examples/ is an npm workspace: npm ci needs its package.json
COPY examples/package.json examples/
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3 esbuild
COPY api api/
COPY constructs constructs/
COPY store store/
COPY reconciler reconciler/
COPY dataplane dataplane/
COPY cli cli/
COPY bin bin/
COPY examples examples/
RUN npm run build \
 && npm pack --ignore-scripts --pack-destination /tmp \
 && mkdir /out \
 && tar -xzf /tmp/spore-*.tgz -C /out \
 && mv /out/package /out/spore \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -f node_modules/spore node_modules/spore-example-shop node_modules/.bin/spore \
 && cp -a node_modules /out/spore/node_modules

FROM node:22-bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spore" \
      org.opencontainers.image.description="Spore's platform: the spore command (reconciler, router, pool manager)" \
      org.opencontainers.image.source="https://github.com/spore-dev/spore" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# git and ssh: the reconciler clones and fetches the apps' repositories; npm
# (in the base image) runs their npm ci; python3 and pip install a Python
# package's requirements (Debian bookworm's 3.11, the runtime-python image's
# version: built files must fit the interpreter that loads them); tini is
# PID 1, forwarding signals and reaping what npm, git and pip leave behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates python3 python3-pip tini \
 && rm -rf /var/lib/apt/lists/*
# uid/gid 1000 (the base image's `node`, renamed) as in the chart's securityContext;
# the chart mounts emptyDirs over these folders: the root filesystem is read-only
RUN groupmod --new-name spore node \
 && usermod --login spore --home /home/spore --move-home node \
 && mkdir -p /var/lib/spore /var/cache/spore \
 && chown 1000:1000 /var/lib/spore /var/cache/spore
COPY --from=build /out/spore /opt/spore
ENV HOME=/home/spore \
    NODE_ENV=production \
    npm_config_cache=/var/cache/spore/npm \
    npm_config_update_notifier=false \
    XDG_CACHE_HOME=/var/cache/spore \
    CDK8S_CHECK_UPGRADE=false
WORKDIR /var/lib/spore
USER 1000:1000
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/opt/spore/bin/spore.js"]
CMD ["--help"]
