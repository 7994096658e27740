/**
 * The proxy's own answers (FAILURES in src/errors.ts) and the README's "Answers the proxy generates" table say the
 * same: every row of the README is an answer the table makes, and every answer the table makes is in the README,
 * with the same status and code, and `Retry-After` where the README promises one.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  FAILURES,
  type FailureKind,
  failure,
  GENERATED_HEADER,
  GENERATED_REASONS,
  HOLD_FAILURES,
  holdFailure,
  knownBadFailure,
} from '../../src/errors.js';
import { HoldError } from '../../src/limiter/scheduler.js';

interface ReadmeRow {
  readonly line: string;
  /** The (status, code) pairs the row stands for. */
  readonly pairs: readonly string[];
  readonly retryAfter: boolean;
}

function readmeRows(): ReadmeRow[] {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.split('## Answers the proxy generates')[1]?.split('\n## ')[0] ?? '';
  const rows: ReadmeRow[] = [];
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((cell) => cell.trim());
    // | Status | `code` | When |: data rows start with a digit.
    if (cells.length < 4 || !/^\d/.test(cells[1]!)) continue;
    const statusCell = cells[1]!;
    const statuses = statusCell.match(/\b\d{3}\b/g) ?? [];
    const codes = cells[2]!.match(/\d+/g) ?? [];
    // "404 / 401 | 10015 / 50027" pairs by position; "403 | 50001, 50013, 50007" and "400, 405 | 50035" combine.
    const paired = statusCell.includes('/') && statuses.length === codes.length;
    const pairs = paired
      ? statuses.map((status, i) => `${status} ${codes[i]}`)
      : statuses.flatMap((status) => codes.map((code) => `${status} ${code}`));
    rows.push({ line: line.trim(), pairs, retryAfter: statusCell.includes('Retry-After') });
  }
  return rows;
}

const kinds = Object.keys(FAILURES) as FailureKind[];
const pairOf = (kind: FailureKind) => `${FAILURES[kind].status} ${FAILURES[kind].code}`;

describe('the proxy answers (src/errors.ts) and the README', () => {
  const rows = readmeRows();

  it('reads the README table', () => {
    expect(rows.length).toBeGreaterThanOrEqual(15);
  });

  it('makes every answer the README lists', () => {
    const made = new Set(kinds.map(pairOf));
    const missing = rows.flatMap((row) =>
      row.pairs.filter((pair) => !made.has(pair)).map((p) => `${p}: ${row.line}`),
    );
    expect(missing).toEqual([]);
  });

  it('lists every answer it makes, with Retry-After where the README says so', () => {
    const unlisted: string[] = [];
    for (const kind of kinds) {
      const rowsOfKind = rows.filter((row) => row.pairs.includes(pairOf(kind)));
      if (rowsOfKind.length === 0) unlisted.push(`${kind} (${pairOf(kind)})`);
      const promised = rowsOfKind.length > 0 && rowsOfKind.every((row) => row.retryAfter);
      const answer = failure(kind, 2500);
      if (promised) expect(answer.headers['retry-after'], kind).toBeDefined();
    }
    expect(unlisted).toEqual([]);
  });
});

describe('failure()', () => {
  it('answers in Discord’s shape, marked as the proxy’s own', () => {
    const answer = failure('hold_timeout', 1500);
    expect(answer.status).toBe(429);
    expect(answer.headers).toEqual({ [GENERATED_HEADER]: 'true', 'retry-after': '2' });
    expect(answer.body).toEqual({
      message: FAILURES.hold_timeout.message,
      code: 990001,
      retry_after: 1.5,
      global: false,
    });
  });

  it('repeats a known-bad answer with Discord’s body and the wait in the header only', () => {
    const answer = failure('missing_access', 30_000);
    expect(answer.body).toEqual({ message: 'Missing Access', code: 50001 });
    expect(answer.headers['retry-after']).toBe('30');
  });

  it('uses the fixed wait of kinds that have one', () => {
    expect(failure('shutting_down', 99_000).body.retry_after).toBe(1);
  });

  it('counts every answer under a known reason', () => {
    for (const kind of kinds) expect(GENERATED_REASONS).toContain(FAILURES[kind].reason);
  });

  it('maps every refusal of the scheduler and every mark', () => {
    for (const reason of Object.keys(HOLD_FAILURES) as (keyof typeof HOLD_FAILURES)[]) {
      expect(holdFailure(new HoldError(reason, 2000)).status).toBe(FAILURES[HOLD_FAILURES[reason]].status);
    }
    expect(holdFailure(new HoldError('hold_timeout', 0)).body.retry_after).toBe(1);
    expect(knownBadFailure('revoked', 0)).toBe('token_revoked');
    expect(knownBadFailure('gone', 50027)).toBe('webhook_token_invalid');
    expect(knownBadFailure('gone', undefined)).toBe('webhook_unknown');
    expect(knownBadFailure('forbidden', 50007)).toBe('cannot_message_user');
    expect(knownBadFailure('forbidden', 12345)).toBe('missing_permissions');
  });
});
