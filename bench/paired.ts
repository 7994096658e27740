/**
 * `npx tsx bench/paired.ts [options] <dir A> <dir B>`: CPU per request of two proxy builds measured at the same
 * time. Both run as `npm start` runs them (`dist/main.js` of each directory, built beforehand) against one fake
 * Discord without latency, and one load generator sends its requests to them in turn (round robin), so load from
 * outside the benchmark falls on both alike; on a shared two-core machine that is what makes a difference of a few
 * per cent visible at all. Prints, per round, each build's proxy CPU µs per answered request and B/A.
 *
 *   --workload unbucketed|bucketed   (default bucketed: classification, admission and learning on every request)
 *   --rounds N                       (default 4; A and B swap places in the round robin every round)
 *   --a-env NAME=VALUE               extra environment of A (repeatable), e.g. REDIS_URL=redis://127.0.0.1:6390
 *   --b-env NAME=VALUE               extra environment of B (repeatable), e.g. PROXY_DIAGNOSTIC_HEADERS=false
 *   --b-watch                        read B's GET /state once a second during the run (the inspector looking)
 *
 * Example (the inspector's overhead, issue 14): git archive <base> | tar -x -C /tmp/base, build both with
 * `npm run build`, then `npx tsx bench/paired.ts /tmp/base .`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { cpuMs, freePort, nodeArgs, ROOT, sleep } from './lib/procs.js';
import { MARK_RESULT } from './lib/spec.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    workload: { type: 'string', default: 'bucketed' },
    rounds: { type: 'string', default: '4' },
    'a-env': { type: 'string', multiple: true, default: [] },
    'b-env': { type: 'string', multiple: true, default: [] },
    'b-watch': { type: 'boolean', default: false },
  },
});
const [dirA, dirB] = positionals.map((dir) => resolve(dir));
if (!dirA || !dirB) throw new Error('usage: bench/paired.ts [options] <dir A> <dir B>');
const workload = values.workload;
if (workload !== 'bucketed' && workload !== 'unbucketed') throw new Error('--workload bucketed|unbucketed');
const rounds = Number(values.rounds);
const envOf = (pairs: string[]) =>
  Object.fromEntries(pairs.map((pair) => pair.split('=', 2) as [string, string]));
const envA = envOf(values['a-env']);
const envB = envOf(values['b-env']);

async function waitUrl(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      const res = await request(url);
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`${url} did not answer`);
}

/** Requests the proxy answered, from its own metrics. */
async function answered(adminUrl: string): Promise<number> {
  const res = await request(`${adminUrl}/metrics`);
  let n = 0;
  for (const line of (await res.body.text()).split('\n'))
    if (line.startsWith('discord_proxy_requests_total{')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

async function startProxy(dir: string, env: Record<string, string>, upstream: string) {
  const port = await freePort();
  const adminPort = await freePort();
  const child = spawn(process.execPath, ['--max-semi-space-size=8', 'dist/main.js'], {
    cwd: dir,
    stdio: 'ignore',
    env: {
      PATH: process.env.PATH,
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      HOST: '127.0.0.1',
      ADMIN_HOST: '127.0.0.1',
      UPSTREAM_URL: upstream,
      GLOBAL_RATE_LIMIT: '100000',
      ...env,
    },
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitUrl(`${admin}/healthz`);
  return { child, url: `http://127.0.0.1:${port}`, admin };
}

const fakePort = await freePort();
const fake = spawn(
  process.execPath,
  nodeArgs('test/fake-discord/cli.ts', [
    '--port',
    String(fakePort),
    '--latency',
    'none',
    '--global',
    '10000000',
  ]),
  { cwd: ROOT, stdio: 'ignore' },
);
const upstream = `http://127.0.0.1:${fakePort}`;
try {
  await waitUrl(`${upstream}/__fake/stats`);
  const policy = await request(`${upstream}/__fake/policy`, {
    method: 'POST',
    body: JSON.stringify({
      method: 'GET',
      template: '/channels/{id}/messages',
      limit: 1_000_000,
      windowMs: 1000,
    }),
  });
  await policy.body.dump();
  const ratios: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const a = await startProxy(dirA, envA, upstream);
    const b = await startProxy(dirB, envB, upstream);
    let watching = values['b-watch'];
    const watcher = (async () => {
      while (watching) {
        await (await request(`${b.admin}/state`)).body.dump();
        await sleep(1000);
      }
    })();
    const before = {
      a: [cpuMs(a.child.pid!), await answered(a.admin)],
      b: [cpuMs(b.child.pid!), await answered(b.admin)],
    };
    const spec = {
      targets: round % 2 ? [b.url, a.url] : [a.url, b.url],
      workload,
      concurrency: 64,
      warmupMs: 1000,
      durationMs: 3000,
      end: 'drain',
      drainMs: 2000,
      seed: 1,
    };
    const run = spawnSync(process.execPath, nodeArgs('bench/loadgen.ts', [JSON.stringify(spec)]), {
      cwd: ROOT,
      encoding: 'utf8',
    });
    if (!run.stdout.includes(MARK_RESULT)) throw new Error(`load generator failed: ${run.stderr}`);
    const usA = ((cpuMs(a.child.pid!) - before.a[0]!) * 1000) / ((await answered(a.admin)) - before.a[1]!);
    const usB = ((cpuMs(b.child.pid!) - before.b[0]!) * 1000) / ((await answered(b.admin)) - before.b[1]!);
    watching = false;
    await watcher;
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
    ratios.push(usB / usA);
    console.log(
      `round ${round + 1}: A ${usA.toFixed(0)} µs/req, B ${usB.toFixed(0)} µs/req, B/A ${(usB / usA).toFixed(3)}`,
    );
    await sleep(300);
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  console.log(
    `${workload}: B/A median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(3)} over ${rounds} rounds`,
  );
} finally {
  fake.kill('SIGKILL');
}
