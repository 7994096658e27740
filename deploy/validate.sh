#!/usr/bin/env bash
# Validates the deployment files with the real tools, offline:
#   - promtool: alert rules (check + unit tests) and the Prometheus config      (required)
#   - haproxy -c: the load balancer config                                       (if haproxy is installed)
#   - docker compose config: docker-compose.yml                       (if docker compose or docker-compose is installed)
#   - kubectl kustomize: deploy/kubernetes builds                                (if kubectl is installed)
#   - kubernetes-models: every manifest against the Kubernetes API schemas      (if those npm packages are installed)
# Exits non-zero on the first failure. Run from anywhere: bash deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }
skip() { printf '==> skipped: %s\n' "$*"; }

# promtool ships in Debian's `prometheus` package. Installing it needs root; anyone else gets told how.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "promtool not found: installing Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "error: promtool not found. Install it (Debian/Ubuntu: sudo apt-get install prometheus) and run again." >&2
    exit 1
  fi
fi

step "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml

step "promtool test rules deploy/prometheus/alerts.test.yml"
promtool test rules deploy/prometheus/alerts.test.yml

step "promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml

if command -v haproxy >/dev/null 2>&1; then
  step "haproxy -c -f deploy/haproxy/haproxy.cfg"
  # Outside compose the replicas' names do not resolve; the config starts them unresolved (init-addr none)
  # and HAProxy says so in warnings, which are expected here. Errors still fail the check.
  if ! output=$(haproxy -c -f deploy/haproxy/haproxy.cfg 2>&1); then
    printf '%s\n' "$output" >&2
    exit 1
  fi
  printf '%s\n' "$output" | grep -v -e 'could not resolve address' -e '^\[NOTICE\]' || true
else
  skip "haproxy not installed (apt-get install haproxy to check deploy/haproxy/haproxy.cfg)"
fi

# `config` parses, interpolates and validates against the Compose schema without a Docker engine.
if docker compose version >/dev/null 2>&1; then
  step "docker compose config"
  docker compose -f docker-compose.yml config --quiet
elif command -v docker-compose >/dev/null 2>&1; then
  step "docker-compose config"
  docker-compose -f docker-compose.yml config --quiet
else
  skip "neither the docker compose plugin nor docker-compose is installed (apt-get install docker-compose)"
fi

if command -v kubectl >/dev/null 2>&1; then
  step "kubectl kustomize deploy/kubernetes"
  manifests=$(kubectl kustomize deploy/kubernetes)
  if node --input-type=module -e "await import('kubernetes-models/v1'); await import('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1')" >/dev/null 2>&1; then
    step "Kubernetes API schemas (kubernetes-models)"
    printf '%s\n' "$manifests" | node deploy/kubernetes/validate-schemas.mjs
  else
    skip "schema check (npm install --no-save kubernetes-models @kubernetes-models/prometheus-operator to enable)"
  fi
else
  skip "kubectl not installed"
fi

step "deployment files are valid"
