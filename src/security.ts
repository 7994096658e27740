/**
 * What the proxy refuses before anything else looks at a request. The proxy must never become an open relay:
 * only UPSTREAM_URL is ever contacted, and only paths under /api/ reach it, so request targets that could mean
 * something else to another parser (absolute URLs, dot segments, encoded slashes, empty segments) are refused
 * rather than normalised.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** Methods Discord's API uses; anything else (CONNECT, TRACE, WebDAV verbs…) is refused. */
export const ALLOWED_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
]);

export type TargetProblem =
  | 'absolute-form' // "GET http://elsewhere/ HTTP/1.1"
  | 'not-api' // not under /api/
  | 'dot-segment' // "." or ".." (plain or percent-encoded)
  | 'encoded-separator' // %2F or %5C: a slash that only some parsers see
  | 'empty-segment' // "//"
  | 'bad-encoding' // "%" not followed by two hex digits
  | 'bad-character'; // a backslash or a control character

const HEX = /^[0-9a-fA-F]{2}$/;

/**
 * Checks the request target (path and query as received). Returns null when it is safe to forward as is.
 * Runs on every request: one pass over the path, no regex built per call.
 */
export function checkTarget(url: string): TargetProblem | null {
  if (url.charCodeAt(0) !== 47 /* / */) return 'absolute-form';
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  if (!path.startsWith('/api/')) return 'not-api';
  let segmentStart = 1;
  for (let i = 1; i <= path.length; i++) {
    const c = i < path.length ? path.charCodeAt(i) : 47;
    if (c === 47) {
      if (i === segmentStart) return i === path.length ? null : 'empty-segment';
      const problem = checkSegment(path.slice(segmentStart, i));
      if (problem) return problem;
      segmentStart = i + 1;
    } else if (c === 92 /* \ */ || c < 32 || c === 127) {
      return 'bad-character';
    }
  }
  const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
  for (let i = query.indexOf('%'); i !== -1; i = query.indexOf('%', i + 1)) {
    if (!HEX.test(query.slice(i + 1, i + 3))) return 'bad-encoding';
  }
  return null;
}

function checkSegment(segment: string): TargetProblem | null {
  if (segment.indexOf('%') === -1) return segment === '.' || segment === '..' ? 'dot-segment' : null;
  let decoded = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c !== '%') {
      decoded += c;
      continue;
    }
    const hex = segment.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return 'bad-encoding';
    const code = Number.parseInt(hex, 16);
    if (code === 0x2f || code === 0x5c) return 'encoded-separator';
    if (code < 32 || code === 127) return 'bad-character';
    decoded += code < 128 ? String.fromCharCode(code) : '%'; // only ASCII matters for dot segments
    i += 2;
  }
  return decoded === '.' || decoded === '..' ? 'dot-segment' : null;
}

/**
 * Constant-time check of the shared secret a client must present when PROXY_AUTH_TOKEN is set. Both sides are
 * hashed first so that neither the comparison's time nor an early length mismatch says anything about it.
 */
export function createProxyAuth(secret: string): (presented: string | undefined) => boolean {
  const expected = createHash('sha256').update(secret).digest();
  return (presented) => {
    if (presented === undefined) return false;
    const value = presented.startsWith('Bearer ') ? presented.slice(7) : presented;
    return timingSafeEqual(createHash('sha256').update(value).digest(), expected);
  };
}
