import { describe, expect, it } from 'vitest';
import { checkTarget, createProxyAuth } from '../../src/security.js';

describe('checkTarget', () => {
  it.each([
    ['/api/v10/channels/123456789012345678/messages', null],
    ['/api/channels/123456789012345678/messages?limit=50&before=1', null],
    ['/api/v10/channels/1/messages/2/reactions/%F0%9F%91%8D/@me', null],
    ['/api/v10/channels/1/messages/2/reactions/blob:123456789012345678/@me', null],
    ['/api/v10/guilds/1/audit-logs?user_id=2&action_type=1', null],
    ['/api/v10/users/@me/', null],
    ['/api/v10/search?q=%E2%9D%A4', null],
    ['http://169.254.169.254/latest/meta-data', 'absolute-form'],
    ['https://discord.com/api/v10/users/@me', 'absolute-form'],
    ['*', 'absolute-form'],
    ['/', 'not-api'],
    ['/metrics', 'not-api'],
    ['/apis/v10/users/@me', 'not-api'],
    ['/API/v10/users/@me', 'not-api'],
    ['/api/v10/../../admin', 'dot-segment'],
    ['/api/v10/channels/./1', 'dot-segment'],
    ['/api/v10/%2e%2e/%2e%2e/admin', 'dot-segment'],
    ['/api/v10/%2E./x', 'dot-segment'],
    ['/api/v10/.%2e/x', 'dot-segment'],
    ['/api/v10/channels%2f1', 'encoded-separator'],
    ['/api/v10/channels%2F..%2F..%2Fx', 'encoded-separator'],
    ['/api/v10/channels%5c1', 'encoded-separator'],
    ['/api/v10//channels/1', 'empty-segment'],
    ['/api//v10/channels/1', 'empty-segment'],
    ['/api/v10/channels/%zz', 'bad-encoding'],
    ['/api/v10/channels/%', 'bad-encoding'],
    ['/api/v10/users/@me?x=%g1', 'bad-encoding'],
    ['/api/v10/channels\\1', 'bad-character'],
    ['/api/v10/channels/%00', 'bad-character'],
  ] as const)('%s → %s', (url, problem) => {
    expect(checkTarget(url)).toBe(problem);
  });
});

describe('createProxyAuth', () => {
  const check = createProxyAuth('s3cret-value');
  it('accepts the secret, raw or as a bearer credential', () => {
    expect(check('s3cret-value')).toBe(true);
    expect(check('Bearer s3cret-value')).toBe(true);
  });
  it('refuses anything else', () => {
    expect(check(undefined)).toBe(false);
    expect(check('')).toBe(false);
    expect(check('s3cret-valu')).toBe(false);
    expect(check('s3cret-value ')).toBe(false);
    expect(check('Bot s3cret-value')).toBe(false);
  });
});
