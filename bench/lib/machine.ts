/** What the benchmark ran on, and how busy the machine was with things that are not the benchmark. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { sleep } from './procs.js';

export interface Machine {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly redis: string;
  readonly kernel: string;
  /** Busy CPU of the whole machine in the second before the benchmark started, in cores. */
  readonly backgroundCores: number;
}

const CLOCK_TICK_MS = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const hz = Number(out.stdout?.trim());
  return 1000 / (Number.isFinite(hz) && hz > 0 ? hz : 100);
})();

/** Busy CPU time of the whole machine so far (all cores, user + system + irq + steal), ms. */
export function systemBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return (
    ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * CLOCK_TICK_MS
  );
}

export async function machine(): Promise<Machine> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const redis = spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout ?? '';
  const before = systemBusyMs();
  const started = performance.now();
  await sleep(1000);
  const backgroundCores = (systemBusyMs() - before) / (performance.now() - started);
  return {
    nproc: os.availableParallelism(),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    redis: /v=(\S+)/.exec(redis)?.[1] ?? 'unknown',
    kernel: os.release(),
    backgroundCores,
  };
}
