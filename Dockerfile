# Keygate container image. Not built on the development machines (no Docker engine there).
#   docker build -t keygate .
#   docker run -p 8080:8080 -p 127.0.0.1:8081:8081 \
#     -v "$PWD/gateway.yaml:/etc/keygate/gateway.yaml:ro" -v keygate-data:/var/lib/keygate \
#     -e KEYGATE_ADMIN_TOKEN=… keygate

# --- build: compile TypeScript and the better-sqlite3 native module
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
RUN npm ci && npm prune --omit=dev

# --- run: only what serving needs, as a non-root user
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
# the key page's files: served from the source tree (tsc copies no assets)
COPY src/admin/page/assets ./src/admin/page/assets
COPY gateway.example.yaml ./
RUN install -d -o node -g node /var/lib/keygate /etc/keygate
USER node
VOLUME ["/var/lib/keygate"]
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:8080/_keygate/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/bin/keygate.js"]
CMD ["serve", "-c", "/etc/keygate/gateway.yaml"]
