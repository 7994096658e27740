import { Agent, type Dispatcher, request } from 'undici';
import { FakeDiscord, type FakeDiscordOptions } from '../fake-discord/server.js';
import { type RunningProxy, type StartProxyOptions, startProxy } from './proxy.js';

export const BOT_A = `Bot ${Buffer.from('111111111111111111').toString('base64')}.GxYz12.secretTokenAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`;
export const BOT_B = `Bot ${Buffer.from('222222222222222222').toString('base64')}.GxYz12.secretTokenBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB`;
export const BEARER = 'Bearer oauthTokenCCCCCCCCCCCCCCCCCCCCCCCCC';

export interface TestEnv {
  /** In-process fake (undefined when the test runs the fake in its own process). */
  fake: FakeDiscord;
  proxy: RunningProxy;
  client: Agent;
  call(method: string, path: string, init?: CallInit): Promise<CallResult>;
  close(): Promise<void>;
}

export interface CallInit {
  auth?: string | null;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface CallResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json(): unknown;
}

/** A fake Discord and a proxy in front of it, both on real loopback sockets. */
export async function startEnv(
  fakeOptions: FakeDiscordOptions = {},
  proxyOptions: StartProxyOptions = {},
): Promise<TestEnv> {
  const fake = new FakeDiscord(fakeOptions);
  const upstreamUrl = await fake.start();
  const proxy = await startProxy(upstreamUrl, proxyOptions);
  const { client, call } = clientFor(proxy.url);
  return {
    fake,
    proxy,
    client,
    call,
    async close() {
      await proxy.close();
      await client.close();
      await fake.stop();
    },
  };
}

/** A keep-alive client like a bot worker's, sending Discord-shaped calls to `baseUrl`. */
export function clientFor(baseUrl: string): { client: Agent; call: TestEnv['call'] } {
  const client = new Agent({ connections: 512, keepAliveTimeout: 10_000 });
  const call = async (method: string, path: string, init: CallInit = {}): Promise<CallResult> => {
    const headers: Record<string, string> = { ...init.headers };
    const auth = init.auth === undefined ? BOT_A : init.auth;
    if (auth !== null) headers.authorization = auth;
    if (init.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
    const res = await request(`${baseUrl}${path}`, {
      method: method as Dispatcher.HttpMethod,
      headers,
      body: init.body ?? null,
      dispatcher: client,
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) };
  };
  return { client, call };
}

/** Runs `workers` concurrent loops of `task` until `durationMs` passes; returns how many tasks completed. */
export async function runWorkers(
  workers: number,
  durationMs: number,
  task: (worker: number, iteration: number) => Promise<void>,
): Promise<number> {
  const end = performance.now() + durationMs;
  let done = 0;
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (let i = 0; performance.now() < end; i++) {
        await task(worker, i);
        done += 1;
      }
    }),
  );
  return done;
}
