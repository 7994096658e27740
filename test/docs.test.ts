/**
 * The documents in docs/ and the code that points into them stay in step: every section of
 * docs/discord-ratelimits.md cited in src/, test/, bench/ or docs/architecture.md exists, no comment cites the
 * document at another path, and every file docs/architecture.md names in backticks exists, with the functions
 * named beside it.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RATELIMITS = 'docs/discord-ratelimits.md';
const ARCHITECTURE = 'docs/architecture.md';
const SOURCE_DIRS = ['src', 'test', 'bench'];
const SOURCE_FILE = /\.(ts|mjs|lua|md)$/;
/** Where a backticked string is a repository path rather than an identifier, a URL path or a command. */
const REPO_PATH = /^(src|test|bench|docs|deploy|scripts)\/[\w./-]*$/;

const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules' && entry.name !== 'results') out.push(...filesUnder(path));
    } else if (SOURCE_FILE.test(entry.name)) out.push(path);
  }
  return out;
}

/** "1", "1.5", "6.10": the numbers of the document's "## N." and "### N.M" headings. */
function sectionNumbers(markdown: string): Set<string> {
  const numbers = new Set<string>();
  for (const m of markdown.matchAll(/^#{2,4} (\d+(?:\.\d+)*)\.? /gm)) numbers.add(m[1]!);
  return numbers;
}

/**
 * Every section cited as `docs/discord-ratelimits.md §A`, including lists and ranges that follow it:
 * "§1.2 and §4.1", "§2, §7.1", "§1–§4".
 */
function citedSections(text: string): string[] {
  const cited: string[] = [];
  const citation =
    /docs\/discord-ratelimits\.md`?\]?(?:\([^)]*\))?((?:(?:\s*(?:,|and|–|-)\s*|\s+)§\d+(?:\.\d+)*)+)/g;
  for (const m of text.matchAll(citation)) {
    for (const s of m[1]!.matchAll(/§(\d+(?:\.\d+)*)/g)) cited.push(s[1]!);
  }
  return cited;
}

describe('docs/discord-ratelimits.md section references', () => {
  const sections = sectionNumbers(read(RATELIMITS));
  // This file's own examples of the citation forms are not citations.
  const sources = SOURCE_DIRS.flatMap(filesUnder).filter((file) => file !== 'test/docs.test.ts');

  it('has numbered sections', () => {
    expect([...sections]).toEqual(expect.arrayContaining(['1', '1.5', '2.4', '4.1', '5.6', '6', '7.1']));
  });

  it('is cited from the code', () => {
    const citing = sources.filter((file) => citedSections(read(file)).length > 0);
    expect(citing.length).toBeGreaterThan(10);
  });

  it('names only sections that exist', () => {
    const missing: string[] = [];
    for (const file of [...sources, ARCHITECTURE]) {
      for (const section of citedSections(read(file))) {
        if (!sections.has(section)) missing.push(`${file}: §${section}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('is always cited by its path in the repository', () => {
    const stale: string[] = [];
    for (const file of sources) {
      read(file)
        .split('\n')
        .forEach((line, i) => {
          // The document's name without docs/ in front is a path that does not exist (e.g. an old copy elsewhere).
          for (const m of line.matchAll(/([\w./-]*)discord-ratelimits\.md/g)) {
            if (!m[1]!.endsWith('docs/')) stale.push(`${file}:${i + 1}: ${line.trim()}`);
          }
        });
    }
    expect(stale).toEqual([]);
  });

  it('parses the citation forms the code uses', () => {
    expect(citedSections('(docs/discord-ratelimits.md §1.2 and §4.1)')).toEqual(['1.2', '4.1']);
    expect(citedSections('(docs/discord-ratelimits.md §2, §7.1).')).toEqual(['2', '7.1']);
    expect(citedSections('docs/discord-ratelimits.md §1–§4')).toEqual(['1', '4']);
    expect(citedSections('[`docs/discord-ratelimits.md` §7](../../docs/discord-ratelimits.md#7-x)')).toEqual([
      '7',
    ]);
    expect(citedSections('see docs/discord-ratelimits.md for more; §3 of RFC 9112')).toEqual([]);
  });
});

describe('docs/architecture.md', () => {
  const lines = read(ARCHITECTURE).split('\n');
  const backticked = (line: string) => [...line.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

  it('names only files and folders that exist', () => {
    const missing: string[] = [];
    let named = 0;
    for (const line of lines) {
      for (const token of backticked(line)) {
        if (!REPO_PATH.test(token)) continue;
        named += 1;
        if (!existsSync(join(ROOT, token))) missing.push(token);
      }
    }
    expect(named).toBeGreaterThan(30);
    expect(missing).toEqual([]);
  });

  it('names functions that exist in the files named on the same line', () => {
    const missing: string[] = [];
    for (const line of lines) {
      const tokens = backticked(line);
      const files = tokens.filter(
        (t) => REPO_PATH.test(t) && existsSync(join(ROOT, t)) && statSync(join(ROOT, t)).isFile(),
      );
      if (files.length === 0) continue;
      const code = files.map(read).join('\n');
      for (const token of tokens) {
        const fn = /^(?:([A-Za-z_$][\w$]*)\.)?([A-Za-z_$][\w$]*)\(\)$/.exec(token);
        if (!fn) continue;
        const [, owner, name] = fn;
        const defined = new RegExp(`\\b${name}\\s*[(<]`).test(code);
        const ownerFound = owner === undefined || new RegExp(`\\b${owner}\\b`).test(code);
        if (!defined || !ownerFound) missing.push(`${token} in ${files.join(', ')}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('is linked from the README, as is the rate-limit reference', () => {
    const readme = read('README.md');
    expect(readme.includes(ARCHITECTURE), `README.md links ${ARCHITECTURE}`).toBe(true);
    expect(readme.includes(RATELIMITS), `README.md links ${RATELIMITS}`).toBe(true);
  });
});
