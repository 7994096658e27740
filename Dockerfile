# syntax=docker/dockerfile:1
#
# Two stages: `build` has the dev toolchain (TypeScript) and produces dist/; `runtime` gets dist/ plus
# production dependencies only, so the final image carries neither tsc nor vitest nor the sources.
#
# Node 26 is the Active LTS line since 2026-10-28 (24 moved to Maintenance on 2026-10-20); trixie is
# Debian stable, bookworm is oldstable. Pin a digest (node:26-trixie-slim@sha256:...) in your registry
# mirror if you need reproducible rebuilds.
ARG NODE_IMAGE=node:26-trixie-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Lockfile first: the dependency layer is reused until package*.json change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
# tsc → dist/, then scripts/copy-lua.mjs puts the Redis Lua scripts beside the compiled limiter.
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
# NODE_ENV=production before `npm ci` as well: libraries (fastify, pino) pick their production paths from it.
ENV NODE_ENV=production \
    PORT=8080 \
    ADMIN_PORT=9090
WORKDIR /app
COPY package.json package-lock.json ./
# No dependency needs an install script; skipping them keeps the runtime install from running foreign code.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force
COPY --from=build /app/dist ./dist
# Files stay owned by root and read-only to the process: it writes nothing to disk, so Kubernetes can
# mount the root filesystem read-only. A numeric UID (the image's `node` user) lets the kubelet verify
# runAsNonRoot without reading /etc/passwd.
USER 1000:1000
# 8080: Discord-shaped traffic (/api/...). 9090: /metrics, /healthz, /readyz — keep it off the public network.
EXPOSE 8080 9090
# The proxy drains held requests on SIGTERM (within SHUTDOWN_TIMEOUT_MS); make sure that is what `docker stop` sends.
STOPSIGNAL SIGTERM
# Slim images ship no curl or wget; node's fetch does the probe. /healthz is liveness only (process answers);
# readiness (/readyz: Redis, shutdown, Cloudflare cool-down) is for the load balancer, not for restarts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ADMIN_PORT || '9090') + '/healthz', { signal: AbortSignal.timeout(2500) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node directly, not `npm start`: npm's prestart would rebuild, and npm does not pass SIGTERM on reliably as PID 1.
# The flags are npm start's (test/deploy.test.ts keeps them equal). --max-semi-space-size=8 caps V8's young
# generation at 8 MB per semi-space: a burst of thousands of held requests otherwise grows it to V8's default
# maximum and RSS with it; `npm run bench` measured less memory while holding 10,000 and no loss of throughput.
CMD ["node", "--max-semi-space-size=8", "dist/main.js"]
