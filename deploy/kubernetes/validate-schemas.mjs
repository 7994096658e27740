// Validates Kubernetes manifests (a multi-document YAML stream on stdin, e.g. `kubectl kustomize` output)
// against the API's OpenAPI schemas, offline, with the kubernetes-models packages. Exit 1 on any invalid or
// unknown object. Used by deploy/validate.sh when those packages are installed.
import { readFileSync } from 'node:fs';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as core from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';

const models = {
  v1: core,
  'apps/v1': apps,
  'autoscaling/v2': autoscaling,
  'networking.k8s.io/v1': networking,
  'policy/v1': policy,
  'monitoring.coreos.com/v1': monitoring,
};

const documents = parseAllDocuments(readFileSync(0, 'utf8'))
  .map((document) => document.toJS())
  .filter((object) => object !== null);
let failures = 0;
for (const object of documents) {
  const name = `${object.kind} ${object.metadata?.name ?? '?'}`;
  const Model = models[object.apiVersion]?.[object.kind];
  if (!Model) {
    failures++;
    console.error(`  no schema for ${object.apiVersion} ${name}`);
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`  valid: ${name}`);
  } catch (error) {
    failures++;
    console.error(`  INVALID: ${name}: ${error instanceof Error ? error.message : String(error)}`);
  }
}
if (documents.length === 0) {
  console.error('  no manifests on stdin');
  failures++;
}
process.exit(failures === 0 ? 0 : 1);
