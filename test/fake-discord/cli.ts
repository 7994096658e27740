import { parseArgs } from 'node:util';
import type { LatencyOption } from './latency.js';
import { type DistanceOptions, isProfileName, PROFILES } from './profiles.js';
import { FakeDiscord, type FakeDiscordOptions } from './server.js';

// `npm run fake-discord [-- flags]`: a standalone fake upstream for manual runs and out-of-process
// benchmarks. Every flag also has an environment variable; flags win.

const HELP = `Usage: npm run fake-discord -- [options]

  --port N              PORT, default 8081
  --host H              HOST, default 127.0.0.1
  --profile P           FAKE_PROFILE: near (no transit, no latency) or far (transit 40 ms median,
                        tail 400 ms; answers 80 ms median, tail 600 ms); --latency and
                        --transit-ms override its parts
  --transit-ms MS       FAKE_TRANSIT_MS: fixed one-way transit before limits are applied
  --latency K           FAKE_LATENCY: lognormal (default without a profile), none, or fixed:<ms>
  --median-get MS       FAKE_MEDIAN_GET_MS, default 60 (lognormal)
  --median-write MS     FAKE_MEDIAN_WRITE_MS, default 150 (lognormal)
  --sigma S             FAKE_SIGMA, default 0.5 (lognormal)
  --global N            FAKE_GLOBAL_LIMIT, default 50 per identity per second
  --global-mode M       FAKE_GLOBAL_MODE: sliding (default) or gcra
  --skew MS             FAKE_CLOCK_SKEW_MS, default 0
  --decimals 3|2        FAKE_DECIMALS, default 3
  --docs-scope          FAKE_DOCS_SCOPE=1: X-RateLimit-Scope only on 429s
  --ban-threshold N     FAKE_BAN_THRESHOLD, default 10000 invalid requests per 10 min
  --record              FAKE_RECORD=1: keep request bodies (off here: a long run would fill memory)
  --help

Control: GET /__fake/stats, POST /__fake/reset, /__fake/ban?ms=, /__fake/fail?n=&kind=, /__fake/policy,
         /__fake/delete-message?id=`;

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    profile: { type: 'string' },
    'transit-ms': { type: 'string' },
    latency: { type: 'string' },
    'median-get': { type: 'string' },
    'median-write': { type: 'string' },
    sigma: { type: 'string' },
    global: { type: 'string' },
    'global-mode': { type: 'string' },
    skew: { type: 'string' },
    decimals: { type: 'string' },
    'docs-scope': { type: 'boolean' },
    'ban-threshold': { type: 'string' },
    record: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});

if (values.help) {
  console.log(HELP);
  process.exit(0);
}

function num(flag: string | undefined, env: string, fallback: number): number {
  const raw = flag ?? process.env[env];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0)
    throw new Error(`${env} / flag: expected a non-negative number, got "${raw}"`);
  return n;
}

function profile(): DistanceOptions | undefined {
  const name = values.profile ?? process.env.FAKE_PROFILE;
  if (name === undefined || name === '') return undefined;
  if (!isProfileName(name)) throw new Error(`FAKE_PROFILE: near or far, got "${name}"`);
  return PROFILES[name];
}

function latency(base: LatencyOption | undefined): LatencyOption {
  const kind = values.latency ?? process.env.FAKE_LATENCY;
  if (kind === undefined || kind === '') return base ?? lognormal();
  if (kind === 'none') return { kind: 'none' };
  if (kind.startsWith('fixed:')) return { kind: 'fixed', ms: num(kind.slice(6), 'FAKE_LATENCY', 0) };
  if (kind !== 'lognormal')
    throw new Error(`FAKE_LATENCY: expected none, fixed:<ms> or lognormal, got "${kind}"`);
  return lognormal();
}

function lognormal(): LatencyOption {
  return {
    kind: 'lognormal',
    medianGetMs: num(values['median-get'], 'FAKE_MEDIAN_GET_MS', 60),
    medianWriteMs: num(values['median-write'], 'FAKE_MEDIAN_WRITE_MS', 150),
    sigma: num(values.sigma, 'FAKE_SIGMA', 0.5),
  };
}

function transit(base: LatencyOption | undefined): LatencyOption {
  const raw = values['transit-ms'] ?? process.env.FAKE_TRANSIT_MS;
  if (raw === undefined || raw === '') return base ?? { kind: 'none' };
  const ms = num(raw, 'FAKE_TRANSIT_MS', 0);
  return ms > 0 ? { kind: 'fixed', ms } : { kind: 'none' };
}

function options(): FakeDiscordOptions {
  const mode = values['global-mode'] ?? process.env.FAKE_GLOBAL_MODE ?? 'sliding';
  if (mode !== 'sliding' && mode !== 'gcra')
    throw new Error(`FAKE_GLOBAL_MODE: sliding or gcra, got "${mode}"`);
  const decimals = num(values.decimals, 'FAKE_DECIMALS', 3);
  if (decimals !== 3 && decimals !== 2) throw new Error('FAKE_DECIMALS: 3 or 2');
  const distance = profile();
  return {
    host: values.host ?? process.env.HOST ?? '127.0.0.1',
    port: num(values.port, 'PORT', 8081),
    transit: transit(distance?.transit),
    latency: latency(distance?.latency),
    globalLimit: num(values.global, 'FAKE_GLOBAL_LIMIT', 50),
    globalMode: mode,
    clockSkewMs: num(values.skew, 'FAKE_CLOCK_SKEW_MS', 0),
    decimals,
    scopeOnSuccess: !(values['docs-scope'] ?? process.env.FAKE_DOCS_SCOPE === '1'),
    invalidBan: { threshold: num(values['ban-threshold'], 'FAKE_BAN_THRESHOLD', 10_000) },
    recordBodies: values.record ?? process.env.FAKE_RECORD === '1',
    maxRecords: 20_000,
  };
}

const fake = new FakeDiscord(options());
const url = await fake.start();
console.log(
  `fake Discord listening on ${url} (transit: ${fake.options.transit.kind}, latency: ${fake.options.latency.kind})`,
);
console.log(`point the proxy at it:  UPSTREAM_URL=${url} npm start`);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  const s = fake.stats();
  console.log(
    `${signal}: ${s.total} requests, by status ${JSON.stringify(s.byStatus)}, 429s ${JSON.stringify(s.rateLimited)}`,
  );
  await fake.stop();
  process.exit(0);
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));
