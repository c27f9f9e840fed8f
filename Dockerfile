# Keygate container image. Not built on the development machines (no Docker engine there);
# test/packaging.test.ts lays out its runtime stage from the COPY lines and runs it.
#   docker build -t keygate .
#   docker run -p 8080:8080 -p 127.0.0.1:8081:8081 -v keygate-data:/var/lib/keygate \
#     -e KEYGATE_ADMIN_TOKEN=… -e DAGU_URL=http://dagu:8080 -e DAGU_API_TOKEN=… keygate
# Your own config: -v "$PWD/gateway.yaml:/etc/keygate/gateway.yaml:ro". The keys live in the volume
# (KEYGATE_STORE_KEYS below; a config of your own says store.keys: sqlite:/var/lib/keygate/keygate.db).

# The one place for the Node.js version: the current active LTS line (CI also tests 20 and 24).
ARG NODE_VERSION=26

# --- build: compile TypeScript and the better-sqlite3 native module
FROM node:${NODE_VERSION}-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY scripts/prepare.mjs ./scripts/
COPY src ./src
RUN npm ci && npm prune --omit=dev

# --- run: only what serving needs, as a non-root user
FROM node:${NODE_VERSION}-bookworm-slim
ENV NODE_ENV=production
# read by gateway.example.yaml (the default config): keys in the volume, admin reachable from the host
ENV KEYGATE_STORE_KEYS=sqlite:/var/lib/keygate/keygate.db
ENV KEYGATE_ADMIN_HOST=0.0.0.0
ENV KEYGATE_PORT=8080
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
# the key page's files: served from the source tree (tsc copies no assets)
COPY src/admin/page/assets ./src/admin/page/assets
COPY gateway.example.yaml ./
COPY gateway.example.yaml /etc/keygate/gateway.yaml
RUN install -d -o node -g node -m 0700 /var/lib/keygate
USER node
VOLUME ["/var/lib/keygate"]
EXPOSE 8080 8081
# the readiness probe the public listener serves (key store and Redis reachable), on the port it listens on
HEALTHCHECK --interval=10s --timeout=3s CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.KEYGATE_PORT}/_keygate/readyz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/bin/keygate.js"]
CMD ["serve", "-c", "/etc/keygate/gateway.yaml"]
