import type { FakeDiscordOptions } from './options.js';

// Where the fake stands relative to the proxy (docs/discord-ratelimits.md §6.1). Spread one into the options:
//   new FakeDiscord({ ...far, policies })

export type DistanceOptions = Required<Pick<FakeDiscordOptions, 'transit' | 'latency'>>;

/** Loopback neighbour: decided and answered at once. The fake's default. */
export const near: DistanceOptions = {
  transit: { kind: 'none' },
  latency: { kind: 'none' },
};

/**
 * Discord over a WAN: a one-way trip of 40 ms median with a tail to 400 ms before the decision, then
 * 80 ms median (tail to 600 ms) of processing and return. Both are drawn per request, so requests
 * overtake each other on the way there and answers on the way back.
 */
export const far: DistanceOptions = {
  transit: { kind: 'lognormal', medianGetMs: 40, medianWriteMs: 40, sigma: 0.7, capMs: 400 },
  latency: { kind: 'lognormal', medianGetMs: 80, medianWriteMs: 80, sigma: 0.6, capMs: 600 },
};

/** The same distance for every request: `transitMs` there, then `answerMs` (default the same) back. */
export function fixed(transitMs: number, answerMs = transitMs): DistanceOptions {
  return {
    transit: transitMs > 0 ? { kind: 'fixed', ms: transitMs } : { kind: 'none' },
    latency: answerMs > 0 ? { kind: 'fixed', ms: answerMs } : { kind: 'none' },
  };
}

export const PROFILES = { near, far } as const;
export type ProfileName = keyof typeof PROFILES;

export function isProfileName(name: string): name is ProfileName {
  return Object.hasOwn(PROFILES, name);
}
