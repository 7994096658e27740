#!/usr/bin/env node
/**
 * `npm run test:stress`: runs `npm test` several times in a row while two CPU-bound busy loops compete for the
 * cores, and reports how many runs passed. A test that only passes on an idle machine (a wall-clock assertion, a
 * race with a timer) fails here first. Exits 1 if any run failed.
 *
 *   npm run test:stress                                  5 runs, 2 busy loops
 *   npm run test:stress -- --runs 1 --project unit       anything not an option of this script goes to vitest
 *                                                        (and such a partial run goes without coverage)
 *   STRESS_RUNS=10 STRESS_BUSY=1 npm run test:stress
 *
 * Options (or their environment variables): --runs N (STRESS_RUNS, default 5), --busy N (STRESS_BUSY, default 2),
 * --busy-max-ms N (STRESS_BUSY_MAX_MS, default 20 minutes per run): the busy loops end when the runs end, or at
 * that hard limit, or when this script dies, whichever comes first.
 */
import { spawn } from 'node:child_process';

function parse(argv) {
  const options = {
    runs: Number(process.env.STRESS_RUNS ?? 5),
    busy: Number(process.env.STRESS_BUSY ?? 2),
    busyMaxMs: process.env.STRESS_BUSY_MAX_MS ? Number(process.env.STRESS_BUSY_MAX_MS) : undefined,
    vitest: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [name, inline] = arg.split('=', 2);
    const value = () => Number(inline ?? argv[++i]);
    if (name === '--runs') options.runs = value();
    else if (name === '--busy') options.busy = value();
    else if (name === '--busy-max-ms') options.busyMaxMs = value();
    else options.vitest.push(arg);
  }
  options.busyMaxMs ??= options.runs * 20 * 60_000;
  for (const key of ['runs', 'busy', 'busyMaxMs']) {
    const least = key === 'busy' ? 0 : 1;
    if (!Number.isInteger(options[key]) || options[key] < least) {
      console.error(`test:stress: ${key} must be a whole number of at least ${least}, got ${options[key]}`);
      process.exit(2);
    }
  }
  return options;
}

/**
 * One busy loop in its own process. It spins until its hard limit, and also stops on its own as soon as its parent
 * is gone (its parent id changes), so a killed stress run cannot leave it spinning.
 */
function startBusyLoop(maxMs) {
  const source = `
    const end = Date.now() + ${maxMs};
    const parent = ${process.pid};
    let x = 0;
    while (Date.now() < end) {
      for (let i = 0; i < 1e6; i++) x = (x + i) % 1000003;
      if (process.ppid !== parent) break;
    }
  `;
  return spawn(process.execPath, ['-e', source], { stdio: 'ignore' });
}

/** The `npm test` now running, to stop with the busy loops if this script is told to stop. */
let current;

function runNpmTest(vitestArgs) {
  // A filtered run (a project, some files) covers part of src/ only: the coverage thresholds are for the whole suite,
  // so such a run goes without coverage.
  const filtered = vitestArgs.length > 0 ? ['--', ...vitestArgs, '--coverage.enabled=false'] : [];
  const args = ['test', ...filtered];
  return new Promise((resolve) => {
    const child = spawn('npm', args, { stdio: 'inherit' });
    current = child;
    child.on('exit', (code, signal) => {
      current = undefined;
      resolve({ code, signal });
    });
    child.on('error', (error) => resolve({ code: null, signal: null, error }));
  });
}

const options = parse(process.argv.slice(2));
const loops = Array.from({ length: options.busy }, () => startBusyLoop(options.busyMaxMs));
const stopLoops = () => {
  for (const loop of loops) {
    // By the PID this script started, never by name: other node processes on the machine are not ours.
    if (loop.exitCode === null && loop.signalCode === null) process.kill(loop.pid, 'SIGKILL');
  }
};
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopLoops();
    if (current?.exitCode === null) process.kill(current.pid, signal);
    process.exit(130);
  });
}

console.log(
  `test:stress: ${options.runs} run(s) of npm test${options.vitest.length ? ` -- ${options.vitest.join(' ')}` : ''}` +
    ` beside ${options.busy} busy loop(s) (pids ${loops.map((l) => l.pid).join(', ') || 'none'})`,
);
const results = [];
try {
  for (let run = 1; run <= options.runs; run++) {
    const started = performance.now();
    const { code, signal, error } = await runNpmTest(options.vitest);
    const seconds = (performance.now() - started) / 1000;
    const passed = code === 0;
    results.push(passed);
    const how = error ? error.message : signal ? `signal ${signal}` : `exit ${code}`;
    console.log(
      `test:stress: run ${run}/${options.runs} ${passed ? 'PASSED' : `FAILED (${how})`} in ${seconds.toFixed(1)} s`,
    );
  }
} finally {
  stopLoops();
}
const passed = results.filter(Boolean).length;
console.log(`test:stress: ${passed} of ${results.length} run(s) passed`);
process.exit(passed === results.length ? 0 : 1);
