/**
 * Starting, watching and stopping the processes a benchmark needs. Every process is a child of the benchmark,
 * listens on a free loopback port, writes its output to a log file in the run's temporary directory, and is
 * stopped by its own PID (SIGTERM, then SIGKILL after a few seconds).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export { freePort } from '../../test/helpers/redis-server.js';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface Service {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly url: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  /** Set when the process ended before stop() was called: how it ended. */
  crashed(): string | undefined;
  stop(): Promise<void>;
}

export interface SpawnOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: Record<string, string>;
  readonly port: number;
  readonly logDir: string;
  /** CPU list for taskset (e.g. "1"); undefined runs unpinned. */
  readonly cpus?: string | undefined;
  readonly startTimeoutMs?: number;
}

const children = new Set<ChildProcess>();

/** Spawns a process and resolves once something accepts connections on its port. */
export async function startService(options: SpawnOptions): Promise<Service> {
  const logFile = join(options.logDir, `${options.name}.log`);
  const fd = openSync(logFile, 'a');
  const [command, args] = options.cpus
    ? ['taskset', ['-c', options.cpus, options.command, ...options.args]]
    : [options.command, [...options.args]];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  children.add(child);
  let exit: string | undefined;
  let stopping = false;
  child.once('exit', (code, signal) => {
    children.delete(child);
    if (!stopping) exit = `exited with ${signal ?? `code ${code}`}`;
  });
  const deadline = performance.now() + (options.startTimeoutMs ?? 20_000);
  while (!(await accepts(options.port))) {
    if (exit !== undefined || performance.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${options.name} did not start (${exit ?? 'timeout'}):\n${tail(logFile, 20)}`);
    }
    await sleep(50);
  }
  return {
    name: options.name,
    pid: child.pid ?? 0,
    port: options.port,
    url: `http://127.0.0.1:${options.port}`,
    logFile,
    child,
    crashed: () => exit,
    stop: () => {
      stopping = true;
      return stopChild(child);
    },
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** Last resort on an unexpected exit of the benchmark: SIGKILL what it started, by PID. */
export function killAll(): void {
  for (const child of children) child.kill('SIGKILL');
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Lines of a pino JSON log at warn (40) or above, written after byte `from`; other lines are ignored. */
export function warnings(file: string, from = 0, max = 3): { count: number; samples: string[] } {
  let text = '';
  try {
    const size = statSync(file).size;
    const fd = openSync(file, 'r');
    const buffer = Buffer.alloc(Math.max(0, size - from));
    readSync(fd, buffer, 0, buffer.length, from);
    closeSync(fd);
    text = buffer.toString('utf8');
  } catch {
    return { count: 0, samples: [] };
  }
  let count = 0;
  const samples: string[] = [];
  for (const line of text.split('\n')) {
    const at = line.indexOf('"level":');
    if (at === -1) continue;
    const level = Number.parseInt(line.slice(at + 8, at + 11), 10);
    if (level >= 40) {
      count++;
      if (samples.length < max) samples.push(line.length > 300 ? `${line.slice(0, 300)}…` : line);
    }
  }
  return { count, samples };
}

const CLOCK_TICK_MS = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const hz = Number(out.stdout?.trim());
  return 1000 / (Number.isFinite(hz) && hz > 0 ? hz : 100);
})();

/** User + system CPU time a process has used so far, ms (10 ms resolution on most kernels). */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_MS;
  } catch {
    return Number.NaN;
  }
}

/** Resident set size of a process, bytes. */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1];
    return kb === undefined ? Number.NaN : Number(kb) * 1024;
  } catch {
    return Number.NaN;
  }
}

/** `node --import tsx <script>` from the repository root. */
export function nodeArgs(script: string, extra: readonly string[] = []): string[] {
  return ['--import', 'tsx', join(ROOT, script), ...extra];
}
