import {
  compilePolicy,
  INTERACTION_TOKEN_PREFIX,
  mergeSpec,
  normalizeTemplate,
  type Policy,
  type PolicyOverride,
  seedPolicies,
} from './policies.js';

// A segment trie instead of a list of regexes: matching costs one split and a few map lookups, which
// matters when benchmarks push tens of thousands of requests per second through the fake.

interface Node {
  readonly lit: Map<string, Node>;
  param: Node | null;
  byMethod: Map<string, Policy> | null;
}

function node(): Node {
  return { lit: new Map(), param: null, byMethod: null };
}

function walk(n: Node, segs: readonly string[], i: number, method: string): Policy | undefined {
  if (i === segs.length) return n.byMethod?.get(method) ?? n.byMethod?.get('*');
  const next = n.lit.get(segs[i]!);
  if (next) {
    // Literals first (/messages/pins before /messages/{id}), then fall back to the parameter branch.
    const found = walk(next, segs, i + 1, method);
    if (found) return found;
  }
  return n.param ? walk(n.param, segs, i + 1, method) : undefined;
}

export class RouteTable {
  private readonly byId = new Map<string, Policy>();
  private root = node();

  constructor(overrides: readonly PolicyOverride[] = []) {
    for (const p of seedPolicies()) this.byId.set(routeId(p.method, p.template), p);
    for (const o of overrides) this.apply(o);
    this.rebuild();
  }

  set(o: PolicyOverride): void {
    this.apply(o);
    this.rebuild();
  }

  /** segs: the path split on '/', starting with the empty string before the first slash. */
  match(method: string, segs: readonly string[]): Policy | undefined {
    return walk(this.root, segs, 1, method);
  }

  private apply(o: PolicyOverride): void {
    const id = routeId(o.method, o.template);
    this.byId.set(id, compilePolicy(mergeSpec(this.byId.get(id)?.spec, o)));
  }

  private rebuild(): void {
    const root = node();
    for (const p of this.byId.values()) {
      let n = root;
      for (const seg of p.template.split('/').slice(1)) {
        if (!seg.startsWith('{') && !seg.startsWith(':')) n = literalChild(n, seg);
        else {
          n.param ??= node();
          n = n.param;
        }
      }
      n.byMethod ??= new Map();
      n.byMethod.set(p.method, p);
    }
    this.root = root;
  }
}

function literalChild(n: Node, seg: string): Node {
  let child = n.lit.get(seg);
  if (!child) {
    child = node();
    n.lit.set(seg, child);
  }
  return child;
}

function routeId(method: string, template: string): string {
  return `${method.toUpperCase()} ${normalizeTemplate(template)}`;
}

/** Strips `/api` or `/api/vN`; anything else is taken as already relative to the API root. */
export function stripApiPrefix(path: string): string {
  if (!path.startsWith('/api')) return path;
  if (path.length === 4) return '/';
  if (path.charCodeAt(4) !== 47 /* / */) return path;
  if (path.charCodeAt(5) === 118 /* v */) {
    let i = 6;
    while (i < path.length && isDigit(path.charCodeAt(i))) i++;
    if (i > 6 && (i === path.length || path.charCodeAt(i) === 47))
      return i === path.length ? '/' : path.slice(i);
  }
  return path.slice(4);
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

export function isSnowflake(s: string): boolean {
  if (s.length < 5 || s.length > 20) return false;
  for (let i = 0; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return false;
  return true;
}

/** Top-level resource (Doc D-RL:16): the first `channels/{id}`, `guilds/{id}` or `webhooks/{id}[/{token}]`. */
export function majorOf(segs: readonly string[]): string {
  const id = segs[2];
  if (!id) return '-';
  switch (segs[1]) {
    case 'channels':
      return `c:${id}`;
    case 'guilds':
      return `g:${id}`;
    case 'webhooks': {
      const token = segs[3];
      return token ? `w:${id}:${token}` : `w:${id}`;
    }
    default:
      return '-';
  }
}

/**
 * Global-exempt per docs/discord-ratelimits.md §3: interaction callbacks and webhooks called with an
 * interaction token.
 */
export function isInteractionRoute(segs: readonly string[]): boolean {
  if (segs[1] === 'interactions') return segs[4] === 'callback';
  return segs[1] === 'webhooks' && segs[3]?.startsWith(INTERACTION_TOKEN_PREFIX) === true;
}

/** A stats label for routes outside the table: ids and tokens replaced so labels stay few. */
export function genericTemplate(segs: readonly string[]): string {
  let out = '';
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    const token = i === 3 && (segs[1] === 'webhooks' || segs[1] === 'interactions');
    out += `/${token ? '{token}' : isSnowflake(s) ? '{id}' : s}`;
  }
  return out || '/';
}
