/**
 * The deployment files (Dockerfile, docker-compose.yml, deploy/) against the code they deploy: env var names
 * and values the config accepts, metric names the proxy exports, the ports and health endpoints it serves, and
 * the commands package.json builds and starts it with. Then deploy/validate.sh runs the real tools (promtool,
 * haproxy, kubectl kustomize).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ENV_DEFAULTS, loadConfig } from '../src/config.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string): string => readFileSync(join(root, path), 'utf8');
// biome-ignore lint/suspicious/noExplicitAny: parsed YAML/JSON is walked by the assertions, which check its shape.
type Doc = any;
const yaml = (path: string): Doc => parse(read(path), { merge: true });

const envNames = new Set(Object.keys(ENV_DEFAULTS));
const PORT = Number(ENV_DEFAULTS.PORT);
const ADMIN_PORT = Number(ENV_DEFAULTS.ADMIN_PORT);

/** Compose-style `${NAME:-default}` interpolation with an empty environment: what a fresh checkout gets. */
const interpolate = (value: unknown): string =>
  String(value).replace(
    /\$\{\w+(?::?-([^}]*))?\}/g,
    (_match, fallback: string | undefined) => fallback ?? '',
  );

function expectKnownEnv(env: Record<string, unknown>, where: string): void {
  for (const name of Object.keys(env)) expect(envNames, `${where} sets ${name}`).toContain(name);
  const values = Object.fromEntries(Object.entries(env).map(([name, value]) => [name, interpolate(value)]));
  expect(() => loadConfig(values), where).not.toThrow();
}

/** Every name the proxy exports: its own from src/metrics.ts (histograms with their series suffixes) plus prom-client's defaults. */
async function exportedSeries(): Promise<Set<string>> {
  const source = read('src/metrics.ts');
  const names = [...source.matchAll(/name: '(discord_proxy_[a-z0-9_]+)'/g)].map((match) => match[1]!);
  const histograms = [...source.matchAll(/new Histogram\(\{\s*name: '([a-z0-9_]+)'/g)].map(
    (match) => match[1]!,
  );
  expect(names.length).toBeGreaterThan(15);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const defaults = (await registry.getMetricsAsJSON()).map((metric) => metric.name);
  const suffixes = histograms.flatMap((name) => ['_bucket', '_sum', '_count'].map((suffix) => name + suffix));
  return new Set([...names, ...suffixes, ...defaults]);
}

/** Metric names a PromQL expression (or a text quoting one) uses, ignoring Prometheus's own `up`. */
const metricsIn = (text: string): string[] => [
  ...new Set(text.match(/\b(?:discord_proxy|nodejs|process)_[a-z0-9_]+/g) ?? []),
];

const parseDuration = (text: string): number => {
  const match = /^(\d+)(ms|s|m)$/.exec(text);
  if (!match) throw new Error(`unexpected duration ${text}`);
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000 }[match[2] as 'ms' | 's' | 'm'];
};

describe('Dockerfile', () => {
  const text = read('Dockerfile').replace(/\\\n/g, ' ');
  const instructions = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const stages = instructions.reduce<string[][]>((all, line) => {
    if (/^FROM\s/i.test(line)) all.push([]);
    all.at(-1)?.push(line);
    return all;
  }, []);
  const runtime = stages.at(-1) ?? [];
  const scripts: Record<string, string> = JSON.parse(read('package.json')).scripts;

  it('builds in one stage and runs from another, on a slim Node image', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const image = /^ARG NODE_IMAGE=(\S+)/m.exec(text)?.[1];
    expect(image).toMatch(/^node:\d+-(trixie|bookworm)-slim$/);
    for (const stage of stages) expect(stage[0]).toMatch(/^FROM \$\{NODE_IMAGE\} AS \w+$/);
  });

  it("builds with package.json's own commands", () => {
    expect(scripts.build).toBeDefined();
    const build = stages[0]!.join('\n');
    expect(build).toMatch(/^RUN npm ci\b(?!.*--omit)/m);
    expect(build).toMatch(/^RUN npm run build$/m);
  });

  it('ships production dependencies and dist/ only, and starts like `npm start` without the rebuild', () => {
    const stage = runtime.join('\n');
    expect(stage).toMatch(/^RUN npm ci --omit=dev\b/m);
    expect(stage).toMatch(/^COPY --from=build \/app\/dist \.\/dist$/m);
    expect(stage).not.toMatch(/--from=build\S* \S*node_modules/);
    expect(stage).toMatch(/^ENV NODE_ENV=production\b/m);
    const cmd = runtime.find((line) => line.startsWith('CMD '));
    expect(JSON.parse(cmd!.slice(4)).join(' ')).toBe(scripts.start);
  });

  it('runs as a numeric non-root user, exposes both ports, stops on SIGTERM and checks /healthz', () => {
    const user = runtime.filter((line) => line.startsWith('USER ')).at(-1);
    expect(user).toMatch(/^USER [1-9]\d*(:[1-9]\d*)?$/);
    expect(runtime).toContain(`EXPOSE ${PORT} ${ADMIN_PORT}`);
    expect(runtime).toContain('STOPSIGNAL SIGTERM');
    const healthcheck = runtime.find((line) => line.startsWith('HEALTHCHECK '));
    expect(healthcheck).toMatch(/CMD \["node", "-e", ".*127\.0\.0\.1.*process\.env\.ADMIN_PORT.*\/healthz/);
  });

  it('keeps host build output out of the context but not what the build needs', () => {
    const patterns = read('.dockerignore')
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'));
    expect(patterns).toEqual(expect.arrayContaining(['node_modules', 'dist', '.git']));
    const matches = (path: string) =>
      patterns.some((pattern) =>
        new RegExp(`^${pattern.replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*')}$`).test(path),
      );
    for (const needed of [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'tsconfig.build.json',
      'src',
      'scripts',
    ]) {
      expect(matches(needed), needed).toBe(false);
    }
  });
});

describe('docker-compose.yml', () => {
  const compose = yaml('docker-compose.yml');
  const services: Record<string, Doc> = compose.services;
  const proxies = Object.keys(services).filter((name) => services[name].build !== undefined);

  it('runs three proxy replicas built from this repository, sharing one Redis', () => {
    expect(proxies).toEqual(['proxy-1', 'proxy-2', 'proxy-3']);
    for (const name of proxies) {
      const service = services[name];
      expect(service.build.context).toBe('.');
      expect(service.environment.REDIS_URL).toBe('redis://redis:6379');
      expect(
        service.ports,
        `${name} publishes no port: traffic goes through the load balancer`,
      ).toBeUndefined();
      expectKnownEnv(service.environment, name);
      expect(parseDuration(service.stop_grace_period)).toBeGreaterThan(
        Number(interpolate(service.environment.SHUTDOWN_TIMEOUT_MS)),
      );
    }
    expect(services.redis.image).toBe('redis:7-alpine');
  });

  it('pins every image to a version', () => {
    for (const [name, service] of Object.entries(services)) {
      expect(service.image, name).toMatch(/^[\w./-]+:(?!latest$)[\w.-]+$/);
    }
  });

  it('publishes only the load balancer, Prometheus and Grafana', () => {
    expect(services.haproxy.ports).toContain(`${PORT}:${PORT}`);
    const published = Object.entries(services).flatMap(([name, service]) => (service.ports ? [name] : []));
    expect(published.sort()).toEqual(['grafana', 'haproxy', 'prometheus']);
  });

  it('mounts configuration files that exist', () => {
    for (const service of Object.values(services)) {
      for (const volume of (service.volumes ?? []) as string[]) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('./')) expect(existsSync(join(root, source)), source).toBe(true);
      }
    }
  });

  it('balances over every replica, health-checked on /readyz at the admin port', () => {
    const cfg = read('deploy/haproxy/haproxy.cfg');
    expect(cfg).toMatch(new RegExp(`^\\s*bind :${PORT}$`, 'm'));
    expect(cfg).toMatch(/^\s*http-check send meth GET uri \/readyz$/m);
    expect(cfg).toMatch(new RegExp(`^\\s*default-server check port ${ADMIN_PORT}\\b`, 'm'));
    const servers = [...cfg.matchAll(/^\s*server (\S+) (\S+)$/gm)].map((match) => `${match[1]} ${match[2]}`);
    expect(servers).toEqual(proxies.map((name) => `${name} ${name}:${PORT}`));
  });

  it('has Prometheus scrape every replica and load the alert rules', () => {
    const prometheus = yaml('deploy/prometheus/prometheus.yml');
    expect(prometheus.rule_files).toEqual(['alerts.yml']);
    const job = prometheus.scrape_configs.find((config: Doc) => config.job_name === 'discord-proxy');
    expect(job.metrics_path).toBe('/metrics');
    expect(job.static_configs[0].targets).toEqual(proxies.map((name) => `${name}:${ADMIN_PORT}`));
  });

  it('provisions Grafana with the Prometheus datasource and the dashboard folder', () => {
    const datasource = yaml('deploy/grafana/provisioning/datasources/prometheus.yml').datasources[0];
    expect(datasource).toMatchObject({
      type: 'prometheus',
      uid: 'prometheus',
      url: 'http://prometheus:9090',
    });
    const provider = yaml('deploy/grafana/provisioning/dashboards/discord-proxy.yml').providers[0];
    expect(services.grafana.volumes).toContain(`./deploy/grafana/dashboards:${provider.options.path}:ro`);
  });
});

describe('Kubernetes manifests', () => {
  const dir = 'deploy/kubernetes';
  const files = readdirSync(join(root, dir)).filter((file) => file.endsWith('.yaml'));
  const objects: Doc[] = files
    .filter((file) => file !== 'kustomization.yaml')
    .flatMap((file) => parseAllDocuments(read(`${dir}/${file}`)).map((document) => document.toJS()));
  const find = (kind: string, name: string): Doc => {
    const found = objects.find((object) => object.kind === kind && object.metadata.name === name);
    if (!found) throw new Error(`no ${kind} ${name} in ${dir}`);
    return found;
  };
  const deployment = find('Deployment', 'discord-proxy');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const podLabels = deployment.spec.template.metadata.labels;
  const config = find('ConfigMap', container.envFrom[0].configMapRef.name).data;
  const secret = find('Secret', container.envFrom[1].secretRef.name).stringData;
  const kustomization = yaml(`${dir}/kustomization.yaml`);

  it('lists every manifest in the kustomization and sets the proxy image there', () => {
    expect([...kustomization.resources].sort()).toEqual(
      files.filter((file) => file !== 'kustomization.yaml').sort(),
    );
    expect(container.image.split(':')[0]).toBe(kustomization.images[0].name);
  });

  it('runs three replicas with public and admin ports named for the probes and the Service', () => {
    expect(deployment.spec.replicas).toBe(3);
    expect(container.ports).toEqual([
      { name: 'http', containerPort: PORT },
      { name: 'admin', containerPort: ADMIN_PORT },
    ]);
    const env = Object.fromEntries(container.env.map((entry: Doc) => [entry.name, entry.value]));
    expect(env).toEqual({ PORT: String(PORT), ADMIN_PORT: String(ADMIN_PORT) });
  });

  it('probes /healthz for liveness and /readyz for readiness on the admin port', () => {
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
    expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'admin' });
  });

  it('uses only variables the proxy reads, with values it accepts, and the secrets from a Secret', () => {
    const env = {
      ...config,
      ...secret,
      ...Object.fromEntries(container.env.map((e: Doc) => [e.name, e.value])),
    };
    expectKnownEnv(env, 'deploy/kubernetes');
    expect(Object.keys(secret).sort()).toEqual(['PROXY_AUTH_TOKEN', 'TOKEN_HASH_KEY']);
    const redis = find('Service', new URL(config.REDIS_URL).hostname);
    expect(redis.spec.ports[0].port).toBe(Number(new URL(config.REDIS_URL).port));
    expect(find('Deployment', redis.metadata.name).spec.template.spec.containers[0].image).toBe(
      'redis:7-alpine',
    );
  });

  it('gives a replica time to drain before it is killed', () => {
    const preStopMs = (container.lifecycle?.preStop?.sleep?.seconds ?? 0) * 1000;
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(
      Number(config.SHUTDOWN_TIMEOUT_MS) + preStopMs,
    );
  });

  it('runs as non-root with a read-only root filesystem and bounded resources', () => {
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(container.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
    });
    for (const kind of ['requests', 'limits']) {
      expect(Object.keys(container.resources[kind]).sort(), kind).toEqual(['cpu', 'memory']);
    }
  });

  it('selects the proxy pods from the Service, PDB, HPA and ServiceMonitor', () => {
    const service = find('Service', 'discord-proxy');
    expect(podLabels).toMatchObject(service.spec.selector);
    expect(service.spec.ports).toEqual([
      { name: 'http', port: PORT, targetPort: 'http' },
      { name: 'admin', port: ADMIN_PORT, targetPort: 'admin' },
    ]);
    const pdb = find('PodDisruptionBudget', 'discord-proxy');
    expect(podLabels).toMatchObject(pdb.spec.selector.matchLabels);
    const hpa = find('HorizontalPodAutoscaler', 'discord-proxy');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: 'discord-proxy',
    });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(3);
    expect(hpa.spec.metrics[0].resource.name).toBe('cpu');
    const monitor = find('ServiceMonitor', 'discord-proxy');
    expect(monitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(service.metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(monitor.spec.endpoints).toEqual([expect.objectContaining({ port: 'admin', path: '/metrics' })]);
  });

  it('carries the same alert rules as deploy/prometheus/alerts.yml', () => {
    const rule = find('PrometheusRule', 'discord-proxy');
    expect(rule.spec.groups, 'run: node deploy/kubernetes/sync-prometheusrule.mjs').toEqual(
      yaml('deploy/prometheus/alerts.yml').groups,
    );
  });
});

describe('Grafana dashboard and Prometheus alerts', () => {
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/discord-proxy.json'));
  const panels: Doc[] = dashboard.panels.filter((panel: Doc) => panel.type !== 'row');
  const dashboardExprs: string[] = panels.flatMap((panel) => panel.targets.map((target: Doc) => target.expr));
  const rules: Doc[] = yaml('deploy/prometheus/alerts.yml').groups.flatMap((group: Doc) => group.rules);

  it('shows the fleet request rate by status and every signal an operator needs', () => {
    expect(dashboardExprs).toContain('sum by (status) (rate(discord_proxy_requests_total[1m]))');
    const used = new Set(dashboardExprs.flatMap(metricsIn));
    for (const name of [
      'discord_proxy_request_duration_seconds_bucket',
      'discord_proxy_hold_seconds_bucket',
      'discord_proxy_held_requests',
      'discord_proxy_upstream_429_total',
      'discord_proxy_generated_responses_total',
      'discord_proxy_invalid_requests_window',
      'discord_proxy_invalid_request_budget',
      'discord_proxy_invalid_answers_total',
      'discord_proxy_budget_refusals_total',
      'discord_proxy_held_body_bytes',
      'discord_proxy_redis_up',
      'discord_proxy_redis_errors_total',
      'discord_proxy_redis_duration_seconds_bucket',
      'discord_proxy_ready',
    ]) {
      expect(used, name).toContain(name);
    }
  });

  it('lays panels out without overlaps, all on the datasource variable', () => {
    const cells = new Set<string>();
    for (const panel of dashboard.panels) {
      const { x, y, w, h } = panel.gridPos;
      expect(x + w, panel.title).toBeLessThanOrEqual(24);
      for (let row = y; row < y + h; row++) {
        for (let column = x; column < x + w; column++) {
          expect(cells.has(`${row}:${column}`), `${panel.title} overlaps at ${row}:${column}`).toBe(false);
          cells.add(`${row}:${column}`);
        }
      }
    }
    for (const panel of panels) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JavaScript template.
      expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
    }
  });

  it('uses only metric names the proxy exports', async () => {
    const exported = await exportedSeries();
    const texts = [
      ...dashboardExprs,
      ...rules.flatMap((rule) => [rule.expr, rule.annotations.summary, rule.annotations.description]),
    ];
    for (const name of new Set(texts.flatMap(metricsIn))) expect(exported, name).toContain(name);
  });

  it('alerts on leaking 429s, the ban line, Redis, holds, readiness and Cloudflare, each with for, severity and text', () => {
    const expected: Record<string, [RegExp, string]> = {
      DiscordProxyUpstream429s: [/discord_proxy_upstream_429_total\{scope!="shared"\}/, '5m'],
      DiscordProxyInvalidRequestBudgetHigh: [/discord_proxy_invalid_request_budget.*> 0\.7$/, '1m'],
      DiscordProxyRedisDown: [/^discord_proxy_redis_up == 0$/, '1m'],
      DiscordProxyHoldTimeHigh: [
        /histogram_quantile\(0\.99, .*discord_proxy_hold_seconds_bucket.*> 5$/,
        '10m',
      ],
      DiscordProxyReplicaNotReady: [/^discord_proxy_ready == 0$/, '2m'],
      DiscordProxyReplicaDown: [/^up\{job="discord-proxy"\} == 0$/, '2m'],
      DiscordProxyNoReadyReplicas: [/discord_proxy_ready/, '2m'],
      DiscordProxyCloudflareCooldown: [/discord_proxy_cloudflare_cooldown\) > 0$/, '1m'],
    };
    expect(rules.map((rule) => rule.alert).sort()).toEqual(Object.keys(expected).sort());
    for (const rule of rules) {
      const [expr, wait] = expected[rule.alert]!;
      expect(rule.expr, rule.alert).toMatch(expr);
      expect(rule.for, rule.alert).toBe(wait);
      expect(['warning', 'critical'], rule.alert).toContain(rule.labels.severity);
      expect(rule.annotations.summary, rule.alert).toBeTruthy();
      expect(rule.annotations.description.length, rule.alert).toBeGreaterThan(80);
    }
  });

  it('has a promtool case where each alert fires and one where it stays quiet', () => {
    const cases: Doc[] = yaml('deploy/prometheus/alerts.test.yml').tests.flatMap(
      (test: Doc) => test.alert_rule_test,
    );
    for (const rule of rules) {
      const own = cases.filter((entry) => entry.alertname === rule.alert);
      expect(
        own.some((entry) => (entry.exp_alerts ?? []).length > 0),
        `${rule.alert} fires`,
      ).toBe(true);
      expect(
        own.some((entry) => (entry.exp_alerts ?? []).length === 0),
        `${rule.alert} stays quiet`,
      ).toBe(true);
    }
  });
});

describe('deploy/validate.sh', () => {
  // promtool check + unit tests, haproxy -c and kubectl kustomize; it may apt-get install promtool on a fresh machine.
  it('passes with the real tools', { timeout: 300_000 }, () => {
    const run = spawnSync('bash', ['deploy/validate.sh'], { cwd: root, encoding: 'utf8', timeout: 290_000 });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toContain('promtool test rules');
    expect(run.stdout).toMatch(/deployment files are valid/);
  });
});
