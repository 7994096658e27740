import { describe, expect, it } from 'vitest';
import { classify } from '../../src/discord/classify.js';
import { markFor } from '../../src/discord/marks.js';

const bot = { authorized: true, webhook: false, webhookWithToken: false };
const anonymous = { authorized: false, webhook: false, webhookWithToken: false };
const webhookToken = { authorized: false, webhook: true, webhookWithToken: true };
const webhookBot = { authorized: true, webhook: true, webhookWithToken: false };

describe('marks: as narrow as the answer', () => {
  it('marks a token revoked on a 401, or only the route for a request without one', () => {
    expect(markFor(401, 0, bot)).toEqual({ scope: 'revoked', duration: 'revoked', code: 0 });
    expect(markFor(401, undefined, bot)).toMatchObject({ scope: 'revoked' });
    expect(markFor(401, 0, anonymous)).toMatchObject({ scope: 'unauthorized', duration: 'revoked' });
    expect(markFor(401, 40001, bot)).toBeNull();
  });

  it('marks a webhook gone only when Discord says the webhook itself is unknown or its token invalid', () => {
    expect(markFor(404, 10015, webhookToken)).toEqual({ scope: 'gone', duration: 'gone', code: 10015 });
    expect(markFor(404, 10015, webhookBot)).toMatchObject({ scope: 'gone' });
    expect(markFor(401, 50027, webhookToken)).toEqual({ scope: 'gone', duration: 'gone', code: 50027 });
    // Unknown Message, Unknown Channel (a thread_id): the webhook is fine.
    expect(markFor(404, 10008, webhookToken)).toBeNull();
    expect(markFor(404, 10003, webhookToken)).toBeNull();
    expect(markFor(404, undefined, webhookToken)).toBeNull();
    expect(markFor(404, 10015, bot)).toBeNull();
  });

  it('marks a 403 on its exact target, or the whole resource for Missing Access, and nothing it does not know', () => {
    expect(markFor(403, 50013, bot)).toEqual({ scope: 'forbidden', duration: 'forbidden', code: 50013 });
    expect(markFor(403, 50007, bot)).toEqual({ scope: 'forbidden', duration: 'forbidden', code: 50007 });
    expect(markFor(403, 50001, bot)).toEqual({ scope: 'closed', duration: 'forbidden', code: 50001 });
    expect(markFor(403, 20001, bot)).toBeNull();
    expect(markFor(403, undefined, bot)).toBeNull();
    expect(markFor(500, 0, bot)).toBeNull();
  });
});

describe('classify: the exact target', () => {
  const hash = (s: string) => `h(${s.length})`;
  const target = (method: string, path: string) => classify(method, path, 0, hash).target;

  it('holds the ids past the major parameter, and never a token', () => {
    expect(target('PUT', '/guilds/1/bans/77')).toBe('/77');
    expect(target('POST', '/channels/1/messages')).toBe('');
    expect(target('DELETE', '/channels/1/messages/5')).toBe('/5');
    expect(target('PUT', '/channels/1/messages/5/reactions/%F0%9F%91%8D/@me')).toBe('/5');
    expect(target('PATCH', '/webhooks/9/secretWebhookToken/messages/5')).toBe('/5');
    expect(target('POST', '/webhooks/9/secretWebhookToken')).toBe('');
    expect(target('GET', '/users/@me/guilds/123/member')).toBe('/123');
    const token = 'a'.repeat(70);
    expect(target('POST', `/interactions/1/${token}/callback`)).not.toContain(token);
  });
});
