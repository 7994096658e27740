import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ENV_DEFAULTS } from '../../src/config.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README configuration table', () => {
  const rows = [...readme.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|/gm)].map((m) => ({
    name: m[1]!,
    defaultText: m[2]!.trim(),
  }));

  it('lists every variable the proxy reads, and no other', () => {
    expect(rows.map((r) => r.name).sort()).toEqual(Object.keys(ENV_DEFAULTS).sort());
  });

  it('states the defaults the code uses', () => {
    for (const { name, defaultText } of rows) {
      const value = ENV_DEFAULTS[name as keyof typeof ENV_DEFAULTS];
      if (value === '') expect(defaultText, name).toMatch(/unset|built-in/);
      else expect(defaultText, name).toContain(`\`${value}\``);
    }
  });
});
