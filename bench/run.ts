/**
 * `npm run bench [-- --quick] [-- --only <case>[,<case>…]] [-- --pin]`
 *
 * Starts the fake Discord, Redis, the proxy (in-process state and Redis), a bare pass-through and
 * @discordjs/proxy as separate processes, drives them with a closed-loop load generator in its own process, and
 * prints absolute figures next to ratios measured in the same run. See bench/README.md.
 *
 * This file is the driver: options, which cases run, in which order, and where the results go. Each case is a
 * module under bench/cases/, the tables and goals are bench/report.ts and bench/goals.ts.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { EFFICIENCY_CASES, efficiency, REPLICA_SETUPS } from './cases/efficiency.js';
import { latencyDropCase } from './cases/latency-drop.js';
import { LOW_LOAD, LOW_LOAD_TARGETS, OVERHEAD_TARGETS, overhead } from './cases/overhead.js';
import { buckets, held, mixed } from './cases/scale.js';
import { fix } from './lib/format.js';
import { buildProxy, Harness } from './lib/harness.js';
import { machine } from './lib/machine.js';
import { killAll, ROOT } from './lib/procs.js';
import { progress, Session, settings } from './lib/session.js';
import { type Results, render, resultsJson } from './report.js';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    only: { type: 'string', multiple: true },
    pin: { type: 'boolean' },
    out: { type: 'string' },
    'keep-logs': { type: 'boolean' },
    tsx: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});

const CASES = [
  'overhead-cpu',
  'overhead-latency',
  'overhead-low',
  'efficiency.hot',
  'efficiency.global',
  'efficiency.far-reactions',
  'efficiency.far-hot',
  'efficiency.far-global',
  'efficiency.latency-drop',
  'scale.mixed',
  'scale.buckets',
  'scale.held',
  'cost',
] as const;
type CaseName = (typeof CASES)[number];

if (values.help) {
  console.log(`Usage: npm run bench -- [--quick] [--only <case>[,<case>...]] [--pin] [--out <file>]

  --quick   shorter windows (for development; figures are noisier)
  --only    run only cases whose name starts with one of these: ${CASES.join(', ')}
            (e.g. --only efficiency, --only overhead-cpu,scale.held)
  --pin     pin the targets to CPU 1 and the fake, Redis and the load generator to CPU 0 (taskset)
  --out     results file (default bench/results/latest.json for a full run,
            bench/results/partial.json.tmp with --quick or --only)
  --keep-logs  keep every process's log (they are kept anyway when something failed)
  --tsx     run the proxy from src/main.ts through tsx instead of compiling it first`);
  process.exit(0);
}

const quick = values.quick === true;
const only = (values.only ?? []).flatMap((o) => o.split(',')).filter((o) => o !== '');
for (const o of only) {
  if (!CASES.some((c) => c.startsWith(o))) {
    console.error(`--only ${o}: no case starts with it; cases are ${CASES.join(', ')}`);
    process.exit(2);
  }
}
const selected = (name: CaseName) => only.length === 0 || only.some((o) => name.startsWith(o));
const partial = quick || only.length > 0;
const outFile = values.out ?? join(ROOT, 'bench/results', partial ? 'partial.json.tmp' : 'latest.json');

async function main(): Promise<void> {
  const res: Results = { efficiency: [], latencyDrop: [], mixed: [] };
  const logDir = mkdtempSync(join(tmpdir(), 'drlp-bench-'));
  const placement = values.pin ? { target: '1', other: '0' } : {};
  let proxyEntry = 'src/main.ts';
  if (!values.tsx) {
    progress('compiling the proxy (tsconfig.build.json) into bench/.tmp/dist');
    proxyEntry = buildProxy() ?? proxyEntry;
  }
  progress(`proxy entry point: ${proxyEntry}`);
  const h = new Harness({ logDir, placement, proxyEntry });
  const s = new Session(h, settings(quick, only, values.pin === true));
  const D = s.windows;
  const ROUNDS = s.settings.rounds;
  const started = performance.now();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    killAll();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  progress(`logs of every process in ${logDir}`);
  res.machine = await machine();
  const attempt = async (name: CaseName, run: () => Promise<void>) => {
    if (!selected(name) || interrupted) return;
    progress(`case ${name}`);
    try {
      await run();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      s.errors.push({ case: name, error: message });
      progress(`case ${name} FAILED: ${message}`);
    }
  };
  try {
    await attempt('overhead-cpu', () =>
      overhead(s, 'overhead-cpu', 'none', [64], D.cpu, ROUNDS.cpu, OVERHEAD_TARGETS),
    );
    await attempt('overhead-latency', () =>
      overhead(s, 'overhead-latency', 'lognormal', [32, 256], D.latency, ROUNDS.latency, OVERHEAD_TARGETS),
    );
    await attempt('overhead-low', () =>
      overhead(
        s,
        'overhead-low',
        LOW_LOAD.latency,
        [LOW_LOAD.concurrency],
        D.low,
        ROUNDS.latency,
        LOW_LOAD_TARGETS,
      ),
    );
    for (const c of EFFICIENCY_CASES)
      await attempt(`efficiency.${c.name}` as CaseName, async () => {
        res.efficiency.push(...(await efficiency(s, c)));
      });
    await attempt('efficiency.latency-drop', async () => {
      const setups = REPLICA_SETUPS.filter((s) => s.kind === 'proxy-memory' || s.replicas === 3);
      res.latencyDrop = await latencyDropCase(s, setups);
    });
    await attempt('scale.mixed', async () => {
      res.mixed = await mixed(s);
    });
    await attempt('scale.buckets', async () => {
      res.buckets = await buckets(s);
    });
    await attempt('scale.held', async () => {
      res.held = await held(s);
    });
    // On its own, the cost case runs what it reads: the CPU-bound bucketed route through both proxies.
    if (only.length > 0 && selected('cost') && !selected('overhead-cpu')) {
      await attempt('cost', () =>
        overhead(s, 'overhead-cpu', 'none', [64], D.cpu, ROUNDS.cpu, [
          { kind: 'proxy-memory', replicas: 1 },
          { kind: 'proxy-redis', replicas: 1 },
        ]),
      );
    }
  } finally {
    await h.close();
  }
  const text = render(s, res);
  console.log(text);
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(resultsJson(s, res), null, 1)}\n`);
  const keepLogs =
    values['keep-logs'] === true || s.errors.length > 0 || s.runs.some((r) => r.rec.crashed.length);
  if (!keepLogs) rmSync(logDir, { recursive: true, force: true });
  console.log(
    `\nTotal time ${fix((performance.now() - started) / 1000, 0)} s. Results written to ${outFile}.`,
  );
  if (keepLogs) console.log(`Process logs kept in ${logDir}`);
}

main().catch((error: unknown) => {
  killAll();
  console.error(error);
  process.exit(1);
});
