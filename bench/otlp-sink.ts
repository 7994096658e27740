/**
 * `npx tsx bench/otlp-sink.ts [port]` (default 4318): an OTLP/HTTP endpoint that accepts and discards traces, so
 * that the cost of tracing can be measured without a collector: point a proxy at it with
 * `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>` (e.g. `bench/paired.ts --b-env ...`). Prints the exports and
 * spans it received every 5 s while any arrive, and on SIGINT/SIGTERM; stops by itself after an hour.
 */
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 4318);
let exports = 0;
let spans = 0;
let bytes = 0;
let reported = -1;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/v1/traces') {
      const body = Buffer.concat(chunks);
      exports += 1;
      bytes += body.length;
      // Counting `"spanId"` is enough for a total, and cheaper than parsing what could be megabytes per export.
      spans += body.toString('latin1').split('"spanId"').length - 1;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});

const report = () => {
  if (exports === reported) return;
  reported = exports;
  console.log(`otlp-sink: ${exports} exports, ${spans} spans, ${(bytes / 1e6).toFixed(1)} MB`);
};
const timer = setInterval(report, 5000);
const stop = () => {
  report();
  clearInterval(timer);
  server.close();
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
setTimeout(stop, 3_600_000).unref();
server.listen(port, '127.0.0.1', () => console.log(`otlp-sink: listening on http://127.0.0.1:${port}`));
