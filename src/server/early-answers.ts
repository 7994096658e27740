/**
 * Answers made before the proxy's route runs (the parser refused the request, the replica is shutting down, the
 * Host header is missing): counted like every other answer, with the route label worked out from the raw target.
 */
import { classify, normalizeApiPath } from '../discord/classify.js';
import type { ProxyAnswer } from '../errors.js';
import type { Metrics } from '../metrics.js';

export class EarlyAnswers {
  constructor(
    private readonly metrics: Metrics,
    private readonly tokenHash: (value: string) => string,
  ) {}

  /** The route template of a raw method and target, for labels and log lines; `-` outside /api/. */
  route(method: string | undefined, url: string | undefined): string {
    const path = normalizeApiPath((url ?? '/').split('?', 1)[0] ?? '/');
    return path === null
      ? '-'
      : classify((method ?? 'GET').toUpperCase(), path, Date.now(), this.tokenHash).template;
  }

  /**
   * Counts one such answer, and returns its route label; without a target (the parser gave up on it) there is
   * none.
   */
  count(method: string | undefined, url: string | undefined, answer: ProxyAnswer): string {
    const route = url === undefined ? '-' : this.route(method, url);
    this.metrics.generated.inc({ reason: answer.reason });
    this.metrics.requests.inc({ method: method ?? '-', route, status: String(answer.status) });
    return route;
  }
}
