/**
 * @discordjs/proxy, the alternative users know, set up as its README shows: `proxyRequests(rest)` on node:http.
 *
 *   UPSTREAM_URL=http://127.0.0.1:8081 PORT=8083 node --import tsx bench/discordjs-proxy.ts
 *
 * `rejectOnRateLimit` and `retries: 0` so that it answers instead of waiting or retrying for minutes when a limit
 * is hit. `globalRequestsPerSecond` is raised to the same 100,000 the benchmark gives our proxy's
 * GLOBAL_RATE_LIMIT: otherwise @discordjs/rest would cap the overhead cases at its default 50 requests per
 * second and answer the rest with 429, which measures its limit, not its overhead.
 */
import { createServer } from 'node:http';
import { proxyRequests } from '@discordjs/proxy';
import { REST } from '@discordjs/rest';

const upstream = process.env.UPSTREAM_URL ?? 'http://127.0.0.1:8081';
const port = Number(process.env.PORT ?? 8083);
const globalRequestsPerSecond = Number(process.env.GLOBAL_RATE_LIMIT ?? 100_000);

const rest = new REST({
  rejectOnRateLimit: () => true,
  retries: 0,
  api: `${upstream}/api`,
  globalRequestsPerSecond,
});
const handle = proxyRequests(rest);
// The README passes proxyRequests(rest) to createServer directly; an error it does not know would then be an
// unhandled rejection that ends the process. Answer 500 instead, and say so on stderr.
let unknownErrors = 0;
const server = createServer((req, res) => {
  Promise.resolve(handle(req, res)).catch((error: unknown) => {
    if (unknownErrors++ < 5) console.error('discordjs-proxy: unhandled error', error);
    if (!res.headersSent) res.statusCode = 500;
    res.end();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  console.log(`discordjs-proxy listening on http://127.0.0.1:${port} -> ${upstream}`);
});
