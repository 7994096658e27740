import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import type { PolicyOverride } from '../fake-discord/policies.js';
import type { LimitedScope } from '../fake-discord/stats.js';
import { freePort } from './redis-server.js';

export interface RemoteStats {
  total: number;
  byStatus: Record<string, number>;
  rateLimited: Record<LimitedScope, number>;
  invalid: number;
  byRoute: Record<string, number>;
  busiestWindow: number;
  busiest: Record<string, number>;
}

export interface FakeProcess {
  url: string;
  pid: number;
  stats(): Promise<RemoteStats>;
  control(action: string, query?: string, body?: unknown): Promise<void>;
  policy(override: PolicyOverride): Promise<void>;
  stop(): Promise<void>;
}

const CLI = fileURLToPath(new URL('../fake-discord/cli.ts', import.meta.url));

/**
 * The fake Discord in its own process, as Discord is on its own machine: load tests then measure arrival times
 * that the proxy's and the test client's event loops cannot distort.
 */
export async function startFakeProcess(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<FakeProcess> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', CLI, '--port', String(port), ...args],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  await new Promise<void>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`fake Discord did not start: ${output}`)), 20_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`fake Discord exited with ${code}: ${output}`));
    });
  });
  child.removeAllListeners('exit');
  const control = async (action: string, query = '', body?: unknown) => {
    const res = await request(`${url}/__fake/${action}${query ? `?${query}` : ''}`, {
      method: 'POST',
      body: body === undefined ? '' : JSON.stringify(body),
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`fake control ${action} failed: ${text}`);
  };
  return {
    url,
    pid: child.pid ?? 0,
    async stats() {
      const res = await request(`${url}/__fake/stats`);
      return (await res.body.json()) as RemoteStats;
    },
    control,
    policy: (override) => control('policy', '', override),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
