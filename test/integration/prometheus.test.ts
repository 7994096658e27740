/**
 * A real Prometheus (Debian's `prometheus` package) scrapes a running proxy, and the dashboard's main panel
 * query returns data from it: the metric names, labels and exposition format hold up against the real thing,
 * and every dashboard query and alert rule is valid PromQL for it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../helpers/env.js';
import { freePort } from '../helpers/redis-server.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dashboard = JSON.parse(
  readFileSync(join(root, 'deploy/grafana/dashboards/discord-proxy.json'), 'utf8'),
);
const MAIN_PANEL = 'Requests by status';

interface Panel {
  title: string;
  targets?: { expr: string }[];
}
const panels: Panel[] = dashboard.panels.filter((panel: Panel) => panel.targets !== undefined);

interface QueryResult {
  status: string;
  error?: string;
  data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
}

interface RulesAnswer {
  data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
}

function requirePrometheus(): void {
  const probe = spawnSync('prometheus', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      "the `prometheus` binary is required for this test and was not found on PATH; install Debian's package: " +
        'sudo apt-get install prometheus',
    );
  }
}

describe('a real Prometheus scraping the proxy', () => {
  let env: TestEnv;
  let prometheus: ChildProcess | undefined;
  let prometheusUrl: string;
  let dir: string;
  let traffic: NodeJS.Timeout | undefined;
  const output: string[] = [];

  beforeAll(async () => {
    requirePrometheus();
    env = await startEnv();
    dir = mkdtempSync(join(tmpdir(), 'drlp-prometheus-'));
    const port = await freePort();
    prometheusUrl = `http://127.0.0.1:${port}`;
    // The production job name, so the dashboard's and the rules' `job="discord-proxy"` selectors match.
    writeFileSync(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        `rule_files: ["${join(root, 'deploy/prometheus/alerts.yml')}"]`,
        'scrape_configs:',
        '  - job_name: discord-proxy',
        '    metrics_path: /metrics',
        `    static_configs: [{ targets: ["${new URL(env.proxy.adminUrl).host}"] }]`,
        '',
      ].join('\n'),
    );
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    prometheus.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    await poll('Prometheus to be ready', 15_000, async () => {
      if (prometheus?.exitCode !== null) throw new Error(`prometheus exited:\n${output.join('')}`);
      const res = await request(`${prometheusUrl}/-/ready`).catch(() => null);
      await res?.body.dump();
      return res?.statusCode === 200;
    });
    // Steady traffic, so rate() over consecutive scrapes is above zero.
    traffic = setInterval(() => {
      void env.call('GET', '/api/v10/users/@me').catch(() => undefined);
    }, 50);
  });

  afterAll(async () => {
    if (traffic) clearInterval(traffic);
    if (prometheus && prometheus.exitCode === null && prometheus.pid !== undefined) {
      const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
      process.kill(prometheus.pid, 'SIGTERM');
      const killer = setTimeout(() => prometheus?.pid && process.kill(prometheus.pid, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }
    await env?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const query = async (expr: string): Promise<QueryResult> => {
    const res = await request(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    return (await res.body.json()) as QueryResult;
  };

  it("returns data for the dashboard's main panel query", async () => {
    const main = panels.find((panel) => panel.title === MAIN_PANEL);
    expect(main, `no panel titled "${MAIN_PANEL}" in the dashboard`).toBeDefined();
    const expr = main!.targets![0]!.expr;

    await poll(`data for ${expr}`, 20_000, async () => {
      const answer = await query(expr);
      expect(answer.status, answer.error).toBe('success');
      return (answer.data?.result ?? []).some(
        (series) => series.metric.status === '200' && Number(series.value[1]) > 0,
      );
    });
    const up = await query('up{job="discord-proxy"}');
    expect(up.data?.result.map((series) => series.value[1])).toEqual(['1']);
  }, 30_000);

  it('accepts every dashboard query and evaluates every alert rule without error', async () => {
    for (const panel of panels) {
      for (const target of panel.targets ?? []) {
        const answer = await query(target.expr);
        expect(answer.status, `${panel.title}: ${target.expr}: ${answer.error}`).toBe('success');
      }
    }
    // Rules are evaluated every second; wait for one evaluation of each, and none may fail.
    await poll('every alert rule evaluated', 5000, async () => {
      const res = await request(`${prometheusUrl}/api/v1/rules`);
      const rules = ((await res.body.json()) as RulesAnswer).data.groups.flatMap((group) => group.rules);
      expect(rules.length).toBeGreaterThan(0);
      for (const rule of rules) expect(rule.health, `${rule.name}: ${rule.lastError}`).not.toBe('err');
      return rules.every((rule) => rule.health === 'ok');
    });
  });
});

async function poll(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
