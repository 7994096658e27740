/**
 * The bare pass-through: Fastify in front of one undici Pool, forwarding every /api request as it is, without
 * classifying, limiting or logging anything. It is the most a Node.js proxy can do on this machine, the
 * yardstick for the real proxy's overhead.
 *
 *   UPSTREAM_URL=http://127.0.0.1:8081 PORT=8082 node --import tsx bench/passthrough.ts
 */
import { pipeline } from 'node:stream';
import Fastify from 'fastify';
import { type Dispatcher, Pool } from 'undici';

const upstream = process.env.UPSTREAM_URL ?? 'http://127.0.0.1:8081';
const port = Number(process.env.PORT ?? 8082);
// Same pool size as the proxy's UPSTREAM_CONNECTIONS default.
const pool = new Pool(upstream, { connections: 256, keepAliveTimeout: 30_000 });
const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

const app = Fastify();
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
app.all('/api/*', (request, reply) => {
  reply.hijack();
  const req = request.raw;
  const res = reply.raw;
  const headers: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!HOP.has(req.rawHeaders[i]!.toLowerCase())) headers.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
  }
  const method = (req.method ?? 'GET') as Dispatcher.HttpMethod;
  pool
    .request({
      method,
      path: req.url ?? '/',
      headers,
      body: method === 'GET' || method === 'HEAD' ? null : req,
    })
    .then(
      (up) => {
        const out: string[] = [];
        for (const [name, value] of Object.entries(up.headers)) {
          if (HOP.has(name) || value === undefined) continue;
          if (Array.isArray(value)) for (const v of value) out.push(name, v);
          else out.push(name, value);
        }
        res.writeHead(up.statusCode, out);
        pipeline(up.body, res, () => {});
      },
      () => {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"message":"upstream unreachable"}');
      },
    );
});

await app.listen({ port, host: '127.0.0.1' });
console.log(`passthrough listening on http://127.0.0.1:${port} -> ${upstream}`);
