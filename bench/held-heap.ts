/**
 * `npm run bench:heap [-- N]`: what one held request costs in the proxy's heap, object by object.
 *
 * Starts the fake Discord and the compiled proxy through the benchmark's harness (as `npm start` runs it), warms the
 * proxy up, takes a heap snapshot, holds N requests (default 2,000) behind exhausted buckets, takes another, and
 * prints the difference per held request, grouped by what each object is (constructor, or what a closure, context,
 * array or string belongs to). Snapshots force a full GC, so this is retained memory only. Loopback only; bounded.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProxy, Harness } from './lib/harness.js';
import { fakeControl, metric, scrape } from './lib/observe.js';
import { killAll, sleep } from './lib/procs.js';
import { botToken, channelId } from './lib/workloads.js';

const HELD = Number(process.argv[2] ?? 2000);
const ROWS = 45;

interface Snapshot {
  snapshot: {
    meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] };
  };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/** Bytes and count per object signature. */
function tally(file: string): Map<string, { count: number; bytes: number }> {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const { node_fields, node_types, edge_fields, edge_types } = s.snapshot.meta;
  const nf = node_fields.length;
  const ef = edge_fields.length;
  const count = s.nodes.length / nf;
  const edgeCountAt = node_fields.indexOf('edge_count');
  const first = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    first[i] = e;
    e += s.nodes[i * nf + edgeCountAt]!;
    first[i + 1] = e;
  }
  const type = (i: number) => node_types[0][s.nodes[i * nf]!]!;
  const name = (i: number) => s.strings[s.nodes[i * nf + 1]!]!;
  const size = (i: number) => s.nodes[i * nf + 3]!;
  const edges = (i: number) => {
    const out: { kind: string; name: string; to: number }[] = [];
    for (let e = first[i]!; e < first[i + 1]!; e++) {
      const kind = edge_types[0][s.edges[e * ef]!]!;
      const raw = s.edges[e * ef + 1]!;
      const label = kind === 'element' || kind === 'hidden' ? `[${raw}]` : s.strings[raw]!;
      out.push({ kind, name: label, to: s.edges[e * ef + 2]! / nf });
    }
    return out;
  };
  // The first strong retainer of each node: what an anonymous array or string belongs to.
  const owner = new Int32Array(count).fill(-1);
  const via: string[] = new Array(count);
  for (let i = 0; i < count; i++) {
    for (const edge of edges(i)) {
      if (edge.kind === 'weak' || owner[edge.to] !== -1) continue;
      owner[edge.to] = i;
      via[edge.to] = edge.name;
    }
  }
  const ownerName = (i: number) => {
    const o = owner[i]!;
    return o === -1 ? '?' : `${name(o).slice(0, 30)}.${via[i]}`;
  };
  const signature = (i: number): string => {
    const t = type(i);
    const n = name(i);
    if (t.includes('string')) return `${t} <- ${ownerName(i)}`;
    if (n === 'native_bind') {
      const bound = edges(i).find((e) => e.name === 'bound_function');
      return `bound ${bound ? name(bound.to) : '?'}`;
    }
    if (t === 'closure') {
      const context = edges(i).find((e) => e.name === 'context');
      const vars = context
        ? edges(context.to)
            .filter((e) => e.kind === 'context')
            .map((e) => e.name)
        : [];
      return `closure ${n || '(anonymous)'} {${vars.slice(0, 6).join(',')}}`;
    }
    if (n === 'system / Context') {
      const vars = edges(i).filter((e) => e.kind === 'context');
      return `context {${vars
        .map((e) => e.name)
        .slice(0, 8)
        .join(',')}}`;
    }
    if (t === 'object' && (n === 'Object' || n === 'Array')) {
      const props = edges(i).filter((e) => e.kind === 'property');
      return `${n} {${props
        .map((e) => e.name)
        .slice(0, 8)
        .join(',')}} <- ${ownerName(i)}`;
    }
    if (t === 'array' || t === 'hidden') return `${t} ${n} <- ${ownerName(i)}`;
    return `${t} ${n.slice(0, 50)}`;
  };
  const out = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < count; i++) {
    const key = signature(i);
    const entry = out.get(key) ?? { count: 0, bytes: 0 };
    entry.count += 1;
    entry.bytes += size(i);
    out.set(key, entry);
  }
  return out;
}

/** One request on `agent`, resolved when its answer has been read (or the request failed). */
function call(port: number, path: string, agent: Agent, token: string): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, agent, headers: { authorization: token } },
      (res) => {
        res.resume();
        res.on('end', resolve);
      },
    );
    req.on('error', () => resolve());
    req.end();
  });
}

async function main(): Promise<void> {
  const proxyEntry = buildProxy();
  if (!proxyEntry) process.exit(1);
  const logDir = mkdtempSync(join(tmpdir(), 'drlp-heap-'));
  const h = new Harness({ logDir, placement: {}, proxyEntry });
  try {
    const fake = await h.fake('heap', 'none', 50);
    // The snapshot flags go through NODE_OPTIONS, so the proxy starts exactly as the benchmark starts it.
    const proxy = await h.proxy('proxy-heap', fake.url, {
      NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${logDir}`,
    });
    await fakeControl(fake.url, 'policy', {
      method: 'GET',
      template: '/channels/{id}/pins',
      limit: 1,
      windowMs: 20_000,
    });
    const token = botToken(0);
    const warm = new Agent({ keepAlive: true });
    for (let i = 0; i < 2000; i += 16) {
      await Promise.all(
        Array.from({ length: 16 }, () => call(proxy.port, '/api/v10/users/@me', warm, token)),
      );
    }
    warm.destroy();
    await sleep(1000);
    const snapshot = async () => {
      const before = new Set(readdirSync(logDir));
      proxy.child.kill('SIGUSR2');
      for (let waited = 0; waited < 60_000; waited += 250) {
        await sleep(250);
        const file = readdirSync(logDir).find((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
        // Written in one go by V8; give it a moment after the name appears.
        if (file) return sleep(1500).then(() => join(logDir, file));
      }
      throw new Error('no heap snapshot');
    };
    const idle = await snapshot();
    const holding = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
    for (let i = 0; i < HELD; i++) {
      void call(proxy.port, `/api/v10/channels/${channelId(5000 + (i % 10))}/pins`, holding, token);
      if (i % 500 === 499) await sleep(50);
    }
    const heldNow = async () => metric(await scrape(proxy.admin), 'discord_proxy_held_requests');
    let count = 0;
    for (let i = 0; i < 150 && count < HELD - 10; i++) {
      await sleep(200);
      count = await heldNow();
    }
    await sleep(2000);
    count = await heldNow();
    const loaded = await snapshot();
    holding.destroy();

    const a = tally(idle);
    const b = tally(loaded);
    const rows = [...b].map(([key, v]) => {
      const o = a.get(key) ?? { count: 0, bytes: 0 };
      return { key, count: v.count - o.count, bytes: v.bytes - o.bytes };
    });
    rows.sort((x, y) => y.bytes - x.bytes);
    const total = rows.reduce((sum, r) => sum + r.bytes, 0);
    console.log(
      `${count} requests held; retained heap ${(total / 1e6).toFixed(1)} MB more than idle = ${Math.round(total / count)} bytes per held request`,
    );
    console.log('bytes/held  objects/held  what');
    for (const r of rows.slice(0, ROWS)) {
      console.log(
        `${String(Math.round(r.bytes / count)).padStart(10)}  ${(r.count / count).toFixed(2).padStart(12)}  ${r.key}`,
      );
    }
  } finally {
    await h.close();
    rmSync(logDir, { recursive: true, force: true });
  }
}

try {
  await main();
} finally {
  killAll();
}
