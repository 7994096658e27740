import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { classify, normalizeApiPath, REACTIONS_ROUTE_KEY, sublimitTag } from '../../src/discord/classify.js';
import { createTokenHasher } from '../../src/discord/identity.js';

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const SECOND = 1000;
const HOUR = 3600 * SECOND;
const DAY = 24 * HOUR;
const DISCORD_EPOCH = 1_420_070_400_000n;

let sequence = 0;
/** A snowflake created at `ms`; the low bits vary so that no two generated ids are equal. */
function snowflakeAt(ms: number): string {
  sequence = (sequence + 1) % 4096;
  return (((BigInt(ms) - DISCORD_EPOCH) << 22n) | BigInt(sequence)).toString();
}

const hash = createTokenHasher('classify-test-secret');
const C = snowflakeAt(NOW - 400 * DAY);
const G = snowflakeAt(NOW - 500 * DAY);
const W = snowflakeAt(NOW - 300 * DAY);
const A = snowflakeAt(NOW - 900 * DAY);
const U = snowflakeAt(NOW - 700 * DAY);
const M_RECENT = snowflakeAt(NOW - 3 * SECOND);
const M_1H = snowflakeAt(NOW - HOUR);
const M_20D = snowflakeAt(NOW - 20 * DAY);
// Real webhook tokens are 68 base64url characters; interaction tokens are base64 of "interaction:…".
const TOKEN = 'Xk3_pL9-qR2sT7uV0wY4zA1bC6dE8fG5hJ2kL7mN9oP3qR6sT0uV4wX8yZ1aB5cD9eF2';
const ITOKEN = Buffer.from(`interaction:${U}:${'Qm9ndXNTZWNyZXQ'.repeat(8)}`).toString('base64url');

function run(method: string, path: string, now = NOW) {
  return classify(method, path, now, hash);
}

describe('normalizeApiPath', () => {
  it.each([
    ['/api/v10/channels/123/messages', '/channels/123/messages'],
    ['/api/v9/guilds/123', '/guilds/123'],
    ['/api/v6/users/@me', '/users/@me'],
    ['/api/channels/123', '/channels/123'],
    ['/api/users/@me', '/users/@me'],
    ['/api/v10/users/@me?with_counts=true', '/users/@me'],
    ['/api/vx/users/@me', '/vx/users/@me'],
    ['/api/v/users', '/v/users'],
  ])('%s → %s', (raw, expected) => {
    expect(normalizeApiPath(raw)).toBe(expected);
  });

  it.each([
    '/apix',
    '/apix/channels/1',
    '/api',
    '/api/',
    '/api/v10',
    '/api/v10/',
    '/api?x=1',
    '/api/v10?x=1',
    '/other',
    '/other/api/v10/users/@me',
    '/',
    '',
    '/API/v10/users/@me',
  ])('%j is not an API path', (raw) => {
    expect(normalizeApiPath(raw)).toBeNull();
  });
});

interface Row {
  readonly request: string;
  readonly template: string;
  readonly routeKey: string;
  readonly major: string;
  readonly exempt?: boolean;
  readonly webhookWithToken?: boolean;
}

// Every row of docs/discord-ratelimits.md §5.6, in order, with this proxy's expected classification.
const WORKED_EXAMPLES: readonly Row[] = [
  {
    request: `POST /channels/${C}/messages`,
    template: '/channels/:id/messages',
    routeKey: 'POST /channels/:id/messages',
    major: `c:${C}`,
  },
  {
    request: `PATCH /channels/${C}/messages/${M_1H}`,
    template: '/channels/:id/messages/:id',
    routeKey: 'PATCH /channels/:id/messages/:id',
    major: `c:${C}`,
  },
  {
    request: `DELETE /channels/${C}/messages/${M_RECENT}`,
    template: '/channels/:id/messages/:id',
    routeKey: 'DELETE /channels/:id/messages/:id <10s',
    major: `c:${C}`,
  },
  {
    request: `DELETE /channels/${C}/messages/${M_1H}`,
    template: '/channels/:id/messages/:id',
    routeKey: 'DELETE /channels/:id/messages/:id',
    major: `c:${C}`,
  },
  {
    request: `DELETE /channels/${C}/messages/${M_20D}`,
    template: '/channels/:id/messages/:id',
    routeKey: 'DELETE /channels/:id/messages/:id >14d',
    major: `c:${C}`,
  },
  {
    request: `PUT /channels/${C}/messages/${M_1H}/reactions/%F0%9F%91%8D/@me`,
    template: '/channels/:id/messages/:id/reactions/:reaction',
    routeKey: REACTIONS_ROUTE_KEY,
    major: `c:${C}`,
  },
  {
    request: `DELETE /channels/${C}/messages/${M_1H}/reactions/name:${U}/${U}`,
    template: '/channels/:id/messages/:id/reactions/:reaction',
    routeKey: REACTIONS_ROUTE_KEY,
    major: `c:${C}`,
  },
  {
    request: `DELETE /channels/${C}/messages/${M_1H}/reactions`,
    template: '/channels/:id/messages/:id/reactions',
    routeKey: REACTIONS_ROUTE_KEY,
    major: `c:${C}`,
  },
  {
    request: `PATCH /channels/${C}`,
    template: '/channels/:id',
    routeKey: 'PATCH /channels/:id',
    major: `c:${C}`,
  },
  {
    request: `GET /guilds/${G}/members/${U}`,
    template: '/guilds/:id/members/:id',
    routeKey: 'GET /guilds/:id/members/:id',
    major: `g:${G}`,
  },
  {
    request: `PATCH /guilds/${G}/members/@me`,
    template: '/guilds/:id/members/@me',
    routeKey: 'PATCH /guilds/:id/members/@me',
    major: `g:${G}`,
  },
  {
    request: `POST /guilds/${G}/emojis`,
    template: '/guilds/:id/emojis',
    routeKey: 'POST /guilds/:id/emojis',
    major: `g:${G}`,
  },
  {
    request: `POST /channels/${C}/messages/${M_1H}/threads`,
    template: '/channels/:id/messages/:id/threads',
    routeKey: 'POST /channels/:id/messages/:id/threads',
    major: `c:${C}`,
  },
  {
    request: `PUT /channels/${C}/thread-members/@me`,
    template: '/channels/:id/thread-members/@me',
    routeKey: 'PUT /channels/:id/thread-members/@me',
    major: `c:${C}`,
  },
  {
    request: `GET /webhooks/${W}`,
    template: '/webhooks/:id',
    routeKey: 'GET /webhooks/:id',
    major: `w:${W}`,
  },
  {
    request: `POST /webhooks/${W}/${TOKEN}`,
    template: '/webhooks/:id/:token',
    routeKey: 'POST /webhooks/:id/:token',
    major: `w:${W}:${hash(TOKEN)}`,
    webhookWithToken: true,
  },
  {
    request: `PATCH /webhooks/${W}/${TOKEN}/messages/${M_1H}`,
    template: '/webhooks/:id/:token/messages/:id',
    routeKey: 'PATCH /webhooks/:id/:token/messages/:id',
    major: `w:${W}:${hash(TOKEN)}`,
    webhookWithToken: true,
  },
  {
    request: `POST /webhooks/${A}/${ITOKEN}`,
    template: '/webhooks/:id/:token',
    routeKey: 'POST /webhooks/:id/:token',
    major: `w:${A}:${hash(ITOKEN)}`,
    exempt: true,
  },
  {
    request: `PATCH /webhooks/${A}/${ITOKEN}/messages/@original`,
    template: '/webhooks/:id/:token/messages/@original',
    routeKey: 'PATCH /webhooks/:id/:token/messages/@original',
    major: `w:${A}:${hash(ITOKEN)}`,
    exempt: true,
  },
  {
    request: `POST /interactions/${U}/${ITOKEN}/callback`,
    template: '/interactions/:id/:token/callback',
    routeKey: 'POST /interactions/:id/:token/callback',
    // discord.js calls this "burst"; keyed per interaction so that callbacks never queue behind each other.
    major: `i:${U}`,
    exempt: true,
  },
  {
    request: `PUT /applications/${A}/guilds/${G}/commands`,
    template: '/applications/:id/guilds/:id/commands',
    routeKey: 'PUT /applications/:id/guilds/:id/commands',
    major: '-',
  },
  { request: 'GET /users/@me', template: '/users/@me', routeKey: 'GET /users/@me', major: '-' },
  { request: 'GET /gateway/bot', template: '/gateway/bot', routeKey: 'GET /gateway/bot', major: '-' },
];

describe('classify: worked examples (§5.6)', () => {
  it('covers all 23 rows', () => {
    expect(WORKED_EXAMPLES).toHaveLength(23);
  });

  it.each(WORKED_EXAMPLES)('$routeKey ($major)', (row) => {
    const [method = '', path = ''] = row.request.split(' ');
    const { target: _target, ...info } = run(method, path);
    expect(info).toEqual({
      template: row.template,
      routeKey: row.routeKey,
      major: row.major,
      exempt: row.exempt ?? false,
      webhookWithToken: row.webhookWithToken ?? false,
    });
  });

  it('gives the same answer through the /api/v10 prefix', () => {
    const path = normalizeApiPath(`/api/v10/channels/${C}/messages/${M_20D}`);
    expect(path).not.toBeNull();
    expect(run('DELETE', path ?? '').routeKey).toBe('DELETE /channels/:id/messages/:id >14d');
  });
});

describe('classify: message delete age tags', () => {
  const path = (ageMs: number) => `/channels/${C}/messages/${snowflakeAt(NOW - ageMs)}`;

  it.each([
    [0, ' <10s'],
    [9_999, ' <10s'],
    [10_000, ''],
    [14 * DAY, ''],
    [14 * DAY + 1, ' >14d'],
    [-5 * SECOND, ' <10s'], // a message "from the future": the proxy's clock is behind Discord's
  ])('age %i ms → %j', (age, tag) => {
    expect(run('DELETE', path(age)).routeKey).toBe(`DELETE /channels/:id/messages/:id${tag}`);
  });

  it('tags only DELETE', () => {
    expect(run('GET', path(20 * DAY)).routeKey).toBe('GET /channels/:id/messages/:id');
    expect(run('PATCH', path(0)).routeKey).toBe('PATCH /channels/:id/messages/:id');
  });

  it('does not tag ids that are not snowflakes', () => {
    expect(run('DELETE', `/channels/${C}/messages/42`).routeKey).toBe('DELETE /channels/:id/messages/:id');
  });

  it('does not tag deeper message routes', () => {
    expect(run('DELETE', `/channels/${C}/messages/${M_20D}/reactions`).routeKey).toBe(REACTIONS_ROUTE_KEY);
  });
});

describe('classify: reactions', () => {
  const EMOJI = [
    '%F0%9F%91%8D',
    '%E2%9D%A4%EF%B8%8F',
    `party_blob:${snowflakeAt(NOW - 90 * DAY)}`,
    `blob%3A${snowflakeAt(NOW - 80 * DAY)}`,
    `a:dance:${snowflakeAt(NOW - 70 * DAY)}`,
    '👍',
  ];
  const USERS = ['@me', U, snowflakeAt(NOW - 60 * DAY)];
  const MESSAGES = [M_RECENT, M_1H, M_20D];

  function keysFor(channel: string, method: string, suffix: (emoji: string, user: string) => string) {
    const seen = new Set<string>();
    for (const message of MESSAGES) {
      for (const emoji of EMOJI) {
        for (const user of USERS) {
          const info = run(
            method,
            `/channels/${channel}/messages/${message}/reactions/${suffix(emoji, user)}`,
          );
          seen.add(`${info.routeKey} | ${info.major}`);
        }
      }
    }
    return [...seen];
  }

  it.each([
    ['PUT', (e: string) => `${e}/@me`],
    ['DELETE', (e: string, u: string) => `${e}/${u}`],
    ['DELETE', (e: string) => e],
    ['GET', (e: string) => e],
  ] as const)('%s: every emoji, user and message of a channel share one route key', (method, suffix) => {
    expect(keysFor(C, method, suffix)).toEqual([`${REACTIONS_ROUTE_KEY} | c:${C}`]);
    const other = snowflakeAt(NOW - 10 * DAY);
    expect(keysFor(other, method, suffix)).toEqual([`${REACTIONS_ROUTE_KEY} | c:${other}`]);
  });

  it('keeps the template of delete-all (bare /reactions) apart for metrics, and its bucket shared', () => {
    const info = run('DELETE', `/channels/${C}/messages/${M_1H}/reactions`);
    expect(info.template).toBe('/channels/:id/messages/:id/reactions');
    expect(info.routeKey).toBe(REACTIONS_ROUTE_KEY);
  });
});

describe('classify: tokens, codes and odd paths', () => {
  it('hides secrets outside the known token positions', () => {
    expect(run('GET', `/users/${'a'.repeat(70)}`).template).toBe('/users/:token');
    expect(run('GET', `/users/${TOKEN}`).template).toBe('/users/:token');
    expect(run('GET', '/users/SomeMixedCaseThing').template).toBe('/users/:param');
    expect(run('GET', '/channels/abc%2Fdef').template).toBe('/channels/:param');
  });

  it('templates invite and guild template codes', () => {
    expect(run('GET', '/invites/hQx3Vb9k').template).toBe('/invites/:code');
    expect(run('GET', '/invites/discord-developers').template).toBe('/invites/:code');
    expect(run('GET', '/invites/hQx3Vb9k/target-users/job-status').template).toBe(
      '/invites/:code/target-users/job-status',
    );
    expect(run('GET', '/guilds/templates/hgM48av5Q69A').template).toBe('/guilds/templates/:code');
    expect(run('PUT', `/guilds/${G}/templates/hgM48av5Q69A`)).toMatchObject({
      template: '/guilds/:id/templates/:code',
      major: `g:${G}`,
    });
  });

  it('only the interaction callback POST is exempt', () => {
    expect(run('GET', `/interactions/${U}/${ITOKEN}/callback`).exempt).toBe(false);
    expect(run('POST', `/interactions/${U}/${ITOKEN}`)).toMatchObject({
      template: '/interactions/:id/:token',
      exempt: false,
    });
  });

  it('never passes a raw webhook token out, only its hash', () => {
    const info = run('POST', `/webhooks/${W}/${TOKEN}/github`);
    expect(info).toMatchObject({ template: '/webhooks/:id/:token/github', webhookWithToken: true });
    expect(JSON.stringify(info)).not.toContain(TOKEN);
    expect(info.major).toBe(`w:${W}:${hash(TOKEN)}`);
  });

  it('treats a webhook path with an empty token segment as the bare webhook', () => {
    expect(run('GET', `/webhooks/${W}/`)).toMatchObject({ major: `w:${W}`, webhookWithToken: false });
  });

  it.each([
    '',
    '/',
    '//',
    '/channels',
    '/channels/',
    '/channels/abc/messages',
    '/webhooks/abc/def',
    '/interactions',
    '/interactions//x/callback',
    'channels/123',
  ])('does not throw on %j', (path) => {
    const info = run('GET', path);
    expect(info.routeKey.startsWith('GET ')).toBe(true);
    expect(info.exempt).toBe(false);
  });

  it('gives a major only for numeric top-level ids', () => {
    expect(run('GET', '/channels/abc/messages').major).toBe('-');
    expect(run('GET', `/users/@me/guilds/${G}`).major).toBe('-');
    expect(run('GET', `/stage-instances/${C}`).major).toBe('-');
  });
});

// ---- Every operation in Discord's OpenAPI spec, with realistic values in every parameter. ----

const ROUTES_TSV = fileURLToPath(new URL('../fixtures/discord-routes.tsv', import.meta.url));

function loadRoutes(): { method: string; path: string; resource: string }[] {
  return readFileSync(ROUTES_TSV, 'utf8')
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const [method = '', path = '', resource = ''] = line.split('\t');
      return { method, path, resource };
    });
}

type ValueSet = 'plain' | 'alternate';

function valueFor(param: string, set: ValueSet): string {
  switch (param) {
    case 'webhook_token':
      return set === 'plain' ? TOKEN : ITOKEN;
    case 'interaction_token':
      return ITOKEN;
    case 'code':
      return set === 'plain' ? 'hQx3Vb9k' : 'discord-developers';
    case 'emoji_name':
      return set === 'plain' ? '%F0%9F%91%8D' : `party_blob:${snowflakeAt(NOW - 50 * DAY)}`;
    case 'answer_id':
      return '3';
    case 'instance_id':
      return `i-${snowflakeAt(NOW - HOUR)}-gc-${snowflakeAt(NOW - DAY)}-${snowflakeAt(NOW - DAY)}`;
    default:
      // Ages between 10 s and 14 d, so message deletes carry no age tag here.
      return snowflakeAt(NOW - HOUR - sequence * 7 * SECOND);
  }
}

function expectedTemplate(specPath: string): string {
  return specPath
    .replace(/\/reactions\/\{emoji_name\}.*$/, '/reactions/:reaction')
    .replace(/\{(?:webhook_token|interaction_token)\}/g, ':token')
    .replace(/\{code\}/g, ':code')
    .replace(/\{[a-z0-9_]+\}/g, ':id');
}

describe('classify: all Discord routes (discord-routes.tsv)', () => {
  const routes = loadRoutes();

  it('has every operation of the spec', () => {
    expect(routes).toHaveLength(242);
  });

  describe.each(['plain', 'alternate'] as const)('with %s values', (set) => {
    it.each(routes)('$method $path', ({ method, path: specPath, resource }) => {
      const values = new Map<string, string>();
      const path = specPath.replace(/\{([a-z0-9_]+)\}/g, (_match, param: string) => {
        const value = valueFor(param, set);
        values.set(param, value);
        return value;
      });
      const info = run(method, path);

      const template = expectedTemplate(specPath);
      expect(info.template).toBe(template);
      const isReaction = template.startsWith('/channels/:id/messages/:id/reactions');
      expect(info.routeKey).toBe(isReaction ? REACTIONS_ROUTE_KEY : `${method} ${template}`);

      const token = values.get('webhook_token') ?? '';
      const expectedMajor: Record<string, string> = {
        '-': '-',
        'channels/{channel_id}': `c:${values.get('channel_id')}`,
        'guilds/{guild_id}': `g:${values.get('guild_id')}`,
        'webhooks/{webhook_id}': `w:${values.get('webhook_id')}`,
        'webhooks/{webhook_id}/{webhook_token}': `w:${values.get('webhook_id')}:${hash(token)}`,
      };
      const isCallbackRoute = specPath === '/interactions/{interaction_id}/{interaction_token}/callback';
      expect(info.major).toBe(
        isCallbackRoute ? `i:${values.get('interaction_id')}` : expectedMajor[resource],
      );

      const majorId = /\{([a-z_]+)\}/.exec(resource)?.[1];
      for (const [param, value] of values) {
        const segments = info.template.split('/');
        expect(segments).not.toContain(value);
        expect(info.routeKey.split(/[ /]/)).not.toContain(value);
        if (value.length >= 8) {
          expect(info.template).not.toContain(value);
          expect(info.routeKey).not.toContain(value);
          if (param !== majorId && !isCallbackRoute) expect(info.major).not.toContain(value);
        }
      }

      const isInteractionToken = token.startsWith('aW50ZXJhY3Rpb246');
      const isCallback = specPath === '/interactions/{interaction_id}/{interaction_token}/callback';
      expect(info.exempt).toBe(isCallback || isInteractionToken);
      expect(info.webhookWithToken).toBe(token !== '' && !isInteractionToken);
    });
  });
});

describe('sublimitTag', () => {
  const json = (value: unknown) => Buffer.from(JSON.stringify(value));
  const channelPatch = run('PATCH', `/channels/${C}`).routeKey;

  it.each([
    ['name', json({ name: 'general' }), 'application/json', 'name-topic'],
    ['topic', json({ topic: 'hello' }), 'application/json', 'name-topic'],
    ['topic cleared', json({ topic: null }), 'application/json', 'name-topic'],
    ['name among others', json({ nsfw: true, name: 'x', position: 2 }), 'application/json', 'name-topic'],
    ['charset parameter', json({ name: 'x' }), 'application/json; charset=utf-8', 'name-topic'],
    ['no content type', json({ name: 'x' }), undefined, 'name-topic'],
    ['other keys', json({ nsfw: true, rate_limit_per_user: 5 }), 'application/json', 'other'],
    ['nested name', json({ permission_overwrites: [{ name: 'x' }] }), 'application/json', 'other'],
    ['empty object', json({}), 'application/json', 'other'],
    ['array', json([{ name: 'x' }]), 'application/json', 'other'],
    ['null', json(null), 'application/json', 'other'],
    ['invalid JSON', Buffer.from('{"name": '), 'application/json', 'other'],
    ['not JSON', Buffer.from('name=x'), 'application/x-www-form-urlencoded', 'other'],
    ['empty body', Buffer.alloc(0), 'application/json', 'other'],
    ['no body', undefined, undefined, 'other'],
  ])('PATCH /channels/:id, %s → %s', (_name, body, contentType, expected) => {
    expect(sublimitTag(channelPatch, body, contentType)).toBe(expected);
  });

  it.each([
    `POST /channels/${C}/messages`,
    `PATCH /channels/${C}/messages/${M_1H}`,
    `DELETE /channels/${C}/messages/${M_20D}`,
    `PATCH /guilds/${G}`,
    `PUT /channels/${C}/messages/${M_1H}/reactions/%F0%9F%91%8D/@me`,
  ])('every other route is "*": %s', (request) => {
    const [method = '', path = ''] = request.split(' ');
    const { routeKey } = run(method, path);
    expect(sublimitTag(routeKey, json({ name: 'x', topic: 'y' }), 'application/json')).toBe('*');
    expect(sublimitTag(routeKey, Buffer.from('not json'), 'application/json')).toBe('*');
  });
});
