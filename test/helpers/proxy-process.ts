import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { freePort } from './redis-server.js';

export interface ProxyProcess {
  url: string;
  adminUrl: string;
  pid: number;
  child: ChildProcess;
  /** Everything the process wrote to stdout/stderr (pino JSON lines). */
  output: string[];
  metric(name: string): Promise<number | undefined>;
  ready(): Promise<number>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

/**
 * The production entry point as its own process, exactly as an operator runs it (optionally with libfaketime,
 * to give it a clock that disagrees with everyone else's: `faketime` is e.g. "+2s" or "-2s").
 */
export async function startProxyProcess(
  env: Record<string, string>,
  options: { faketime?: string } = {},
): Promise<ProxyProcess> {
  const port = await freePort();
  const adminPort = await freePort();
  // libfaketime is preloaded into node itself (the `faketime` wrapper forks, which would leave the PID we
  // signal pointing at the wrapper instead of the proxy).
  const faketimeEnv: Record<string, string> = options.faketime
    ? { LD_PRELOAD: FAKETIME_LIB, FAKETIME: options.faketime, FAKETIME_DONT_RESET: '1' }
    : {};
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: {
      ...process.env,
      ...faketimeEnv,
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      HOST: '127.0.0.1',
      ADMIN_HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      REQUEST_LOG_LEVEL: 'debug',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (output.join('').includes('proxy ready')) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`proxy process did not start:\n${output.join('')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    adminUrl,
    pid: child.pid ?? 0,
    child,
    output,
    async metric(name: string) {
      const res = await request(`${adminUrl}/metrics`);
      const text = await res.body.text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
    },
    async ready() {
      const res = await request(`${adminUrl}/readyz`);
      await res.body.dump();
      return res.statusCode;
    },
    // A process that has not exited 15 s after the signal is killed, so a broken shutdown fails its own test
    // instead of hanging every test after it.
    kill: (signal: NodeJS.Signals = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
        child.once('exit', (code) => {
          clearTimeout(force);
          resolve(code);
        });
        child.kill(signal);
      }),
  };
}
