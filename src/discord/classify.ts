import type { RouteInfo } from './types.js';

const DISCORD_EPOCH_MS = 1_420_070_400_000n;
const TEN_SECONDS_MS = 10_000;
const FOURTEEN_DAYS_MS = 14 * 24 * 60 * 60 * 1000;
/** base64 of "interaction:": every interaction token starts with it (docs/discord-ratelimits.md §5.4). */
const INTERACTION_TOKEN_PREFIX = 'aW50ZXJhY3Rpb246';
/** Webhook tokens are 68 characters and interaction tokens longer; no Discord literal comes close. */
const TOKEN_MIN_LENGTH = 60;
const MESSAGE_BY_ID = '/channels/:id/messages/:id';
const REACTIONS = '/channels/:id/messages/:id/reactions';
export const REACTIONS_ROUTE_KEY = `* ${REACTIONS}`;
const CHANNEL_PATCH = 'PATCH /channels/:id';
const JSON_CONTENT_TYPE = /json/i;

const SHAPE_EMPTY = 0;
const SHAPE_DIGITS = 1;
/** Only characters Discord uses in its own path literals: a-z, 0-9, "-", ".", "_", "@". */
const SHAPE_LITERAL = 2;
/** Anything else (upper case, "%", ":", "=", …) is caller data, never a route literal. */
const SHAPE_OTHER = 3;

function shapeOf(segment: string): number {
  const length = segment.length;
  if (length === 0) return SHAPE_EMPTY;
  let digits = true;
  for (let i = 0; i < length; i++) {
    const c = segment.charCodeAt(i);
    if (c >= 48 && c <= 57) continue;
    digits = false;
    if ((c >= 97 && c <= 122) || c === 45 || c === 46 || c === 95 || c === 64) continue;
    return SHAPE_OTHER;
  }
  return digits ? SHAPE_DIGITS : SHAPE_LITERAL;
}

/**
 * Strips `/api` or `/api/v{N}`. Returns null for paths outside the API or with nothing after the prefix.
 * A query string is cut off defensively: ids in it (e.g. `thread_id`) must not reach a template.
 */
export function normalizeApiPath(rawPath: string): string | null {
  if (!rawPath.startsWith('/api/')) return null;
  let end = rawPath.indexOf('?');
  if (end === -1) end = rawPath.length;
  let start = 4;
  if (rawPath.charCodeAt(5) === 118) {
    let j = 6;
    while (j < end) {
      const c = rawPath.charCodeAt(j);
      if (c < 48 || c > 57) break;
      j++;
    }
    if (j > 6 && (j === end || rawPath.charCodeAt(j) === 47)) start = j;
  }
  if (end - start <= 1) return null;
  return rawPath.slice(start, end);
}

function templateSegment(segment: string, previous: string | undefined): string {
  if (segment === '') return '';
  // Invite and template codes are short mixed-case strings that would otherwise pass as literals.
  if (previous === 'invites' || previous === 'templates') return ':code';
  // Activity instance ids look like "i-<snowflake>-gc-<snowflake>-<snowflake>", not like snowflakes.
  if (previous === 'activity-instances') return ':id';
  const shape = shapeOf(segment);
  // Any all-digit segment, not only 17–20 digits: poll answer ids are small integers.
  if (shape === SHAPE_DIGITS) return ':id';
  if (segment.length >= TOKEN_MIN_LENGTH) return ':token';
  if (shape === SHAPE_OTHER) return ':param';
  return segment;
}

/**
 * The route-key tag for message deletes: Discord moves them between buckets by message age
 * (docs/discord-ratelimits.md §2.4).
 */
function deleteAgeTag(messageId: string, nowMs: number): string {
  if (messageId.length < 17 || messageId.length > 20) return '';
  const createdMs = Number((BigInt(messageId) >> 22n) + DISCORD_EPOCH_MS);
  const ageMs = nowMs - createdMs;
  if (ageMs < TEN_SECONDS_MS) return ' <10s';
  if (ageMs > FOURTEEN_DAYS_MS) return ' >14d';
  return '';
}

/**
 * Maps a normalised path (see normalizeApiPath) to its route template, route key and major parameter.
 * `method` must be upper case. `tokenHash` keeps raw webhook tokens out of the major key.
 */
export function classify(
  method: string,
  path: string,
  nowMs: number,
  tokenHash: (s: string) => string,
): RouteInfo {
  const segments = path.split('/');
  const count = segments.length;
  const resource = segments[1];
  const resourceId = segments[2];
  const numericId = resourceId !== undefined && shapeOf(resourceId) === SHAPE_DIGITS;

  let major = '-';
  let exempt = false;
  let webhookWithToken = false;
  // Index of a segment that is a token by its position, whatever it looks like.
  let tokenIndex = -1;

  if (numericId && resource === 'channels') {
    major = `c:${resourceId}`;
  } else if (numericId && resource === 'guilds') {
    major = `g:${resourceId}`;
  } else if (numericId && resource === 'webhooks') {
    const token = segments[3];
    if (token === undefined || token === '') {
      major = `w:${resourceId}`;
    } else {
      tokenIndex = 3;
      major = `w:${resourceId}:${tokenHash(token)}`;
      // Interaction follow-ups share the webhook routes but are exempt from the global limit
      // (docs/discord-ratelimits.md §3).
      if (token.startsWith(INTERACTION_TOKEN_PREFIX)) exempt = true;
      else webhookWithToken = true;
    }
  } else if (numericId && resource === 'interactions' && count >= 4 && segments[3] !== '') {
    tokenIndex = 3;
    exempt = method === 'POST' && count === 5 && segments[4] === 'callback';
    // One interaction's callback is independent of every other's; a shared "-" major would line them all up
    // behind one probe.
    if (exempt) major = `i:${resourceId}`;
  }

  let template = segments[0] === '' ? '' : templateSegment(segments[0] ?? '', undefined);
  // The segments past the major parameter (its id, and a webhook's token) say which exact thing the request is
  // about: the member of a ban, the message of a delete. Tokens never go in.
  const targetFrom = major === '-' ? 1 : tokenIndex === 3 && resource === 'webhooks' ? 4 : 3;
  let target = '';
  for (let i = 1; i < count; i++) {
    const previous = segments[i - 1];
    // Emoji and user after /reactions/ all share one bucket per channel (docs/discord-ratelimits.md §2.4), so
    // they collapse.
    if (previous === 'reactions') {
      template += '/:reaction';
      break;
    }
    const part = i === tokenIndex ? ':token' : templateSegment(segments[i] ?? '', previous);
    template += `/${part}`;
    if (i >= targetFrom && part !== ':token' && part !== segments[i]) target += `/${segments[i]}`;
  }

  let routeKey = `${method} ${template}`;
  if (template.startsWith(REACTIONS)) {
    // Every reaction verb on every message of a channel counts against one bucket
    // (docs/discord-ratelimits.md §2.4). One route key makes them learn one hash with one probe, instead of
    // each verb probing into a bucket another verb emptied.
    routeKey = REACTIONS_ROUTE_KEY;
  } else if (method === 'DELETE' && template === MESSAGE_BY_ID) {
    routeKey += deleteAgeTag(segments[4] ?? '', nowMs);
  }

  return { template, routeKey, major, exempt, webhookWithToken, target };
}

function touchesNameOrTopic(body: Buffer | undefined, contentType: string | undefined): boolean {
  if (body === undefined || body.length === 0) return false;
  if (contentType !== undefined && !JSON_CONTENT_TYPE.test(contentType)) return false;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    // Discord rejects the body with a 400 anyway; it cannot hit the name/topic sublimit.
    return false;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return false;
  return Object.hasOwn(parsed, 'name') || Object.hasOwn(parsed, 'topic');
}

/**
 * Which requests a sublimit 429 (remaining > 0) on `routeKey` applies to. Only channel renames and topic
 * changes have a known hidden sublimit (docs/discord-ratelimits.md §2.4); elsewhere a sublimit is assumed to
 * cover the whole route.
 */
export function sublimitTag(
  routeKey: string,
  body: Buffer | undefined,
  contentType: string | undefined,
): string {
  if (routeKey !== CHANNEL_PATCH) return '*';
  return touchesNameOrTopic(body, contentType) ? 'name-topic' : 'other';
}
