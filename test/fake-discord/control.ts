import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LatencyOption } from './latency.js';
import type { ForbiddenCode } from './model.js';
import type { PolicyOverride } from './policies.js';
import type { FailureKind, FakeDiscord, FakeStats } from './server.js';

// Remote control under /__fake/ (outside /api, so a proxy under test never forwards it), for benchmarks
// that run the fake in its own process via `npm run fake-discord`:
//   GET  /__fake/stats                          counters and busiest windows per identity
//   POST /__fake/reset
//   POST /__fake/ban?ms=60000
//   POST /__fake/fail?n=3&kind=502
//   POST /__fake/policy        body: PolicyOverride JSON
//   POST /__fake/latency       body: LatencyOption JSON, e.g. {"kind":"fixed","ms":5}
//   POST /__fake/revoke        body: {"authorization": "Bot ..."}
//   POST /__fake/forbid?method=POST&prefix=/channels/1[&code=50001|50007|50013]
//   POST /__fake/delete-webhook?id=123
//   POST /__fake/delete-message?id=123

const FAILURES: readonly string[] = ['500', '502', '504', 'hang', 'reset'];

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function okByIdentity(s: FakeStats): Record<string, number> {
  const byIdentity = new Map<string, number>();
  // One pass over the records (a callback that counts as it goes), however many identities there are.
  s.countOf((r) => {
    if (r.status !== 429 && r.status !== 0) byIdentity.set(r.identity, (byIdentity.get(r.identity) ?? 0) + 1);
    return false;
  });
  const counts: Record<string, number> = {};
  for (const [id, n] of byIdentity) counts[createHash('sha256').update(id).digest('hex').slice(0, 12)] = n;
  return counts;
}

function statsJson(fake: FakeDiscord): unknown {
  const s = fake.stats();
  const busiest = Object.fromEntries(s.identities.map((id) => [id, s.busiestWindow(id)]));
  const { total, byStatus, rateLimited, invalid, byRoute, droppedRecords } = s;
  return {
    total,
    byStatus,
    rateLimited,
    invalid,
    byRoute,
    droppedRecords,
    busiestWindow: s.busiestWindow(),
    busiest,
    // Answered without a 429, per identity; identities are shortened so no token leaves the fake whole.
    okByIdentity: okByIdentity(s),
  };
}

function apply(fake: FakeDiscord, action: string, params: URLSearchParams, body: unknown): unknown {
  switch (action) {
    case 'reset':
      return fake.reset();
    case 'ban': {
      const ms = params.get('ms');
      return fake.banNow(ms === null ? undefined : Number(ms));
    }
    case 'fail': {
      const kind = params.get('kind') ?? '500';
      if (!FAILURES.includes(kind)) throw new Error(`kind must be one of ${FAILURES.join(', ')}`);
      return fake.failNext(Number(params.get('n') ?? '1'), kind as FailureKind);
    }
    case 'policy':
      return fake.setPolicy(body as PolicyOverride);
    case 'latency':
      return fake.setLatency(body as LatencyOption);
    case 'revoke':
      return fake.revokeToken(String((body as { authorization?: unknown }).authorization));
    case 'forbid':
      return fake.forbid(
        params.get('method') ?? '*',
        params.get('prefix') ?? '/',
        forbiddenCode(params.get('code')),
      );
    case 'delete-webhook':
      return fake.deleteWebhook(params.get('id') ?? '');
    case 'delete-message': {
      const id = params.get('id');
      if (!id) throw new Error('delete-message needs ?id=');
      return fake.deleteMessage(id);
    }
    default:
      throw new Error(`unknown control action ${action}`);
  }
}

function forbiddenCode(value: string | null): ForbiddenCode | undefined {
  if (value === null) return undefined;
  const code = Number(value);
  if (code !== 50001 && code !== 50007 && code !== 50013)
    throw new Error('code must be 50001, 50007 or 50013');
  return code;
}

export function handleControl(fake: FakeDiscord, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://fake');
  const action = url.pathname.slice('/__fake/'.length);
  if (req.method === 'GET' && action === 'stats') {
    req.resume();
    send(res, 200, statsJson(fake));
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      apply(fake, action, url.searchParams, text ? JSON.parse(text) : {});
      send(res, 200, { ok: true });
    } catch (err) {
      send(res, 400, { ok: false, error: err instanceof Error ? err.message : String(err) });
    }
  });
}
