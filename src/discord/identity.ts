import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import type { Identity } from './types.js';

/** Bots reuse a handful of tokens, so a small cache hits almost always; clearing keeps memory bounded. */
const CACHE_LIMIT = 10_000;
/** 8 bytes: collisions between the few tokens one proxy sees are negligible, and labels stay short. */
const KEY_BYTES = 8;
const NO_IDENTITY: Identity = Object.freeze({ key: 'none', kind: 'none' });

function keyedHash(key: KeyObject, value: string): string {
  return createHmac('sha256', key).update(value, 'utf8').digest().toString('hex', 0, KEY_BYTES);
}

function isBase64Char(c: number): boolean {
  return (
    (c >= 65 && c <= 90) || // A-Z
    (c >= 97 && c <= 122) || // a-z
    (c >= 48 && c <= 57) || // 0-9
    c === 43 || // +
    c === 47 || // /
    c === 45 || // -
    c === 95 || // _
    c === 61 // =
  );
}

/**
 * The first segment of a bot token is the bot's user id in base64. Node's decoder skips characters it does
 * not know instead of failing, so the alphabet and the result are both checked before trusting it.
 */
function decodeBotId(token: string): string | undefined {
  const dot = token.indexOf('.');
  const end = dot === -1 ? token.length : dot;
  // 17–20 digits encode to 23–28 base64 characters (with or without padding).
  if (end < 23 || end > 28) return undefined;
  for (let i = 0; i < end; i++) {
    if (!isBase64Char(token.charCodeAt(i))) return undefined;
  }
  const decoded = Buffer.from(token.slice(0, end), 'base64').toString('latin1');
  if (decoded.length < 17 || decoded.length > 20 || decoded.charCodeAt(0) === 48) return undefined;
  for (let i = 0; i < decoded.length; i++) {
    const c = decoded.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  return decoded;
}

const WHITESPACE = /\s/;

function identify(key: KeyObject, authorization: string): Identity {
  const value = authorization.trim();
  if (value === '') return NO_IDENTITY;
  // Discord reads the scheme word without regard to case and the whitespace around the credential, so "Bot x",
  // "bot x" and "Bot  x " are one token with one global limit: one identity, hashed from one spelling.
  const space = value.search(WHITESPACE);
  const scheme = (space === -1 ? value : value.slice(0, space)).toLowerCase();
  const credential = space === -1 ? '' : value.slice(space + 1).trim();
  const hashed = keyedHash(key, space === -1 ? value : `${scheme} ${credential}`);
  if (scheme === 'bot') {
    const botId = space === -1 ? undefined : decodeBotId(credential);
    const identity: Identity =
      botId === undefined ? { key: hashed, kind: 'bot' } : { key: hashed, kind: 'bot', botId };
    return Object.freeze(identity);
  }
  // Bearer, and anything else authenticated (e.g. a bare user token): its own identity, no bot overrides.
  return Object.freeze({ key: hashed, kind: 'bearer' });
}

function boundedSet<V>(cache: Map<string, V>, key: string, value: V): V {
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, value);
  return value;
}

/** Whose limits apply: a keyed hash of the whole Authorization value, so raw tokens never leave here. */
export function createIdentifier(secret: string): (authorization: string | undefined) => Identity {
  const key = createSecretKey(Buffer.from(secret, 'utf8'));
  const cache = new Map<string, Identity>();
  return (authorization) => {
    if (authorization === undefined || authorization === '') return NO_IDENTITY;
    return cache.get(authorization) ?? boundedSet(cache, authorization, identify(key, authorization));
  };
}

/** The same keyed hash, for webhook tokens that end up in major parameters and bucket keys. */
export function createTokenHasher(secret: string): (value: string) => string {
  const key = createSecretKey(Buffer.from(secret, 'utf8'));
  const cache = new Map<string, string>();
  return (value) => cache.get(value) ?? boundedSet(cache, value, keyedHash(key, value));
}
