// Writes prometheusrule.yaml from ../prometheus/alerts.yml, so the Prometheus Operator loads exactly the rules
// that `promtool test rules` tested. Run after editing alerts.yml:
//   node deploy/kubernetes/sync-prometheusrule.mjs
// test/deploy.test.ts fails while the two disagree.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const here = new URL('.', import.meta.url);
const rules = parse(readFileSync(new URL('../prometheus/alerts.yml', here), 'utf8'));
const resource = {
  apiVersion: 'monitoring.coreos.com/v1',
  kind: 'PrometheusRule',
  metadata: {
    name: 'discord-proxy',
    labels: { 'app.kubernetes.io/name': 'discord-proxy', 'app.kubernetes.io/component': 'proxy' },
  },
  spec: { groups: rules.groups },
};
const header = [
  '# Generated from deploy/prometheus/alerts.yml by deploy/kubernetes/sync-prometheusrule.mjs: edit alerts.yml,',
  '# then run the script. Your Prometheus may select rules by label (kube-prometheus-stack: release: <name>).',
  '',
].join('\n');
const target = fileURLToPath(new URL('prometheusrule.yaml', here));
writeFileSync(target, header + stringify(resource, { lineWidth: 0 }));
// The repository's formatter owns quoting style; `npm run lint` would reject yaml's choices otherwise.
execFileSync(fileURLToPath(new URL('../../node_modules/.bin/biome', here)), ['format', '--write', target], {
  stdio: 'inherit',
});
