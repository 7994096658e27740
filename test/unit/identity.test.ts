import { describe, expect, it } from 'vitest';
import { createIdentifier, createTokenHasher } from '../../src/discord/identity.js';

const SECRET = 'identity-test-secret';
const BOT_ID = '1276580072400224306';
const encodeId = (id: string) => Buffer.from(id).toString('base64url');
const BOT_TOKEN = `${encodeId(BOT_ID)}.GhIjKl.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789-_aB`;
const HEX16 = /^[0-9a-f]{16}$/;

describe('createIdentifier', () => {
  const identify = createIdentifier(SECRET);

  it.each([undefined, '', '   '])('no Authorization (%j) is the "none" identity', (authorization) => {
    expect(identify(authorization)).toEqual({ key: 'none', kind: 'none' });
  });

  it('recognises bot tokens and decodes the bot id', () => {
    const identity = identify(`Bot ${BOT_TOKEN}`);
    expect(identity).toEqual({ key: expect.stringMatching(HEX16), kind: 'bot', botId: BOT_ID });
  });

  it.each(['bot', 'BOT', 'bOt'])('the scheme is case-insensitive (%s)', (scheme) => {
    expect(identify(`${scheme} ${BOT_TOKEN}`)).toMatchObject({ kind: 'bot', botId: BOT_ID });
  });

  it.each(['Bearer', 'bearer', 'BEARER'])('recognises OAuth tokens (%s)', (scheme) => {
    const identity = identify(`${scheme} xG7pQ2wErT9yUiOpAsDfGhJkL`);
    expect(identity).toEqual({ key: expect.stringMatching(HEX16), kind: 'bearer' });
  });

  it('limits an unrecognised credential as its own non-bot identity', () => {
    expect(identify(BOT_TOKEN)).toEqual({ key: expect.stringMatching(HEX16), kind: 'bearer' });
  });

  it.each([
    ['17 digits', '41771983423143937'],
    ['18 digits', '123456789012345678'],
    ['20 digits', '12345678901234567890'],
  ])('decodes ids of %s, padded and unpadded', (_name, id) => {
    const padded = Buffer.from(id).toString('base64');
    const unpadded = Buffer.from(id).toString('base64url');
    expect(identify(`Bot ${padded}.x.y`).botId).toBe(id);
    expect(identify(`Bot ${unpadded}.x.y`).botId).toBe(id);
  });

  it.each([
    ['no token', 'Bot'],
    ['empty token', 'Bot '],
    ['dots only', 'Bot ...'],
    ['16 digits', `Bot ${encodeId('1234567890123456')}.x.y`],
    ['21 digits', `Bot ${encodeId('123456789012345678901')}.x.y`],
    ['not digits', `Bot ${encodeId('hello world, 123456')}.x.y`],
    ['leading zero', `Bot ${encodeId('012345678901234567')}.x.y`],
    ['invalid base64 characters', 'Bot MTIzNDU2Nzg5!!!yMzQ1Njc4.x.y'],
    ['non-ASCII', 'Bot 🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂.x.y'],
    ['very long', `Bot ${'A'.repeat(100_000)}`],
    [
      'binary after decoding',
      `Bot ${Buffer.from([0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]).toString('base64')}.x`,
    ],
  ])('garbage bot token (%s) does not throw and has no bot id', (_name, authorization) => {
    const identity = identify(authorization);
    expect(identity.kind).toBe('bot');
    expect(identity.key).toMatch(HEX16);
    expect('botId' in identity).toBe(false);
  });

  it('gives the same key for the same token and different keys for different tokens', () => {
    const a = identify(`Bot ${BOT_TOKEN}`);
    expect(identify(`Bot ${BOT_TOKEN}`).key).toBe(a.key);
    expect(identify(`Bot ${BOT_TOKEN}x`).key).not.toBe(a.key);
    expect(identify(`Bearer ${BOT_TOKEN}`).key).not.toBe(a.key);
  });

  it('gives one identity to one token however the scheme is spelt (one token, two identities)', () => {
    const a = identify(`Bot ${BOT_TOKEN}`);
    for (const spelling of [
      `bot ${BOT_TOKEN}`,
      `BOT ${BOT_TOKEN}`,
      ` Bot  ${BOT_TOKEN} `,
      `Bot\t${BOT_TOKEN}`,
    ]) {
      expect(identify(spelling)).toEqual(a);
    }
    expect(identify(`bearer abc`).key).toBe(identify('Bearer  abc').key);
    // The credential itself is case-sensitive.
    expect(identify(`Bot ${BOT_TOKEN.toLowerCase()}`).key).not.toBe(a.key);
  });

  it('depends on the secret', () => {
    const other = createIdentifier('another-secret');
    expect(other(`Bot ${BOT_TOKEN}`).key).not.toBe(identify(`Bot ${BOT_TOKEN}`).key);
    expect(createIdentifier(SECRET)(`Bot ${BOT_TOKEN}`).key).toBe(identify(`Bot ${BOT_TOKEN}`).key);
  });

  it('never puts any part of the token in the identity', () => {
    const identity = identify(`Bot ${BOT_TOKEN}`);
    const serialised = JSON.stringify(identity);
    for (const part of BOT_TOKEN.split('.')) expect(serialised).not.toContain(part);
  });

  it('returns frozen identities', () => {
    expect(Object.isFrozen(identify(`Bot ${BOT_TOKEN}`))).toBe(true);
    expect(Object.isFrozen(identify(undefined))).toBe(true);
  });

  it('keeps answering correctly after the cache fills and clears', () => {
    const fresh = createIdentifier(SECRET);
    const first = fresh(`Bot ${BOT_TOKEN}`).key;
    for (let i = 0; i < 12_000; i++) fresh(`Bearer token-${i}`);
    expect(fresh(`Bot ${BOT_TOKEN}`).key).toBe(first);
    expect(fresh('Bearer token-11999').key).toBe(identify('Bearer token-11999').key);
  });
});

describe('createTokenHasher', () => {
  const hash = createTokenHasher(SECRET);
  const TOKEN = 'Xk3_pL9-qR2sT7uV0wY4zA1bC6dE8fG5hJ2kL7mN9oP3qR6sT0uV4wX8yZ1aB5cD9eF2';

  it('is a short, stable, keyed hash', () => {
    expect(hash(TOKEN)).toMatch(HEX16);
    expect(hash(TOKEN)).toBe(hash(TOKEN));
    expect(hash(`${TOKEN}x`)).not.toBe(hash(TOKEN));
    expect(createTokenHasher('another-secret')(TOKEN)).not.toBe(hash(TOKEN));
    expect(createTokenHasher(SECRET)(TOKEN)).toBe(hash(TOKEN));
  });

  it('hashes even an empty value without throwing', () => {
    expect(hash('')).toMatch(HEX16);
  });
});
