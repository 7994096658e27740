/**
 * Recent traffic per identity and per queue (identity, route, major parameter, tag), for the inspector: which
 * tokens and buckets were busy lately, even when nothing is held right now.
 *
 * Fed by Scheduler.watch, which the inspector sets only while someone looks (see Inspector.watching), so a replica
 * nobody inspects pays one property check per request. Each note is O(1) and both maps are bounded: past `max`
 * entries the oldest-inserted one is dropped (insertion order, not strict LRU: a busy entry re-inserted by
 * eviction costs nothing more than a new one).
 */
import type { AdmitInput } from '../limiter/types.js';

/** Requests are counted in slots of this length; the rate is read over the last one and a part of the one before. */
const SLOT_MS = 5000;

export interface Traffic {
  /** Requests since it was first seen (while watched). */
  requests: number;
  /** performance.now() of the latest. */
  last: number;
  slot: number;
  current: number;
  previous: number;
}

export interface QueueTraffic extends Traffic {
  readonly input: AdmitInput;
}

export class RecentTraffic {
  readonly identities = new Map<string, Traffic>();
  readonly queues = new Map<string, QueueTraffic>();

  constructor(private readonly max = 1024) {}

  /** One new request of queue `key`. */
  note(key: string, input: AdmitInput): void {
    const now = performance.now();
    const slot = Math.floor(now / SLOT_MS);
    let identity = this.identities.get(input.identity);
    if (!identity) {
      identity = { requests: 0, last: now, slot, current: 0, previous: 0 };
      bounded(this.identities, this.max).set(input.identity, identity);
    }
    count(identity, now, slot);
    let queue = this.queues.get(key);
    if (!queue) {
      queue = { input, requests: 0, last: now, slot, current: 0, previous: 0 };
      bounded(this.queues, this.max).set(key, queue);
    }
    count(queue, now, slot);
  }

  clear(): void {
    this.identities.clear();
    this.queues.clear();
  }
}

/** Requests per second lately: the current slot plus the part of the previous one still within a slot's length. */
export function rate(t: Traffic, now: number): number {
  const slot = Math.floor(now / SLOT_MS);
  const elapsed = (now % SLOT_MS) / SLOT_MS;
  const current = t.slot === slot ? t.current : 0;
  const previous = t.slot === slot ? t.previous : t.slot === slot - 1 ? t.current : 0;
  return (current + previous * (1 - elapsed)) / (SLOT_MS / 1000);
}

function count(t: Traffic, now: number, slot: number): void {
  if (t.slot !== slot) {
    t.previous = t.slot === slot - 1 ? t.current : 0;
    t.current = 0;
    t.slot = slot;
  }
  t.current += 1;
  t.requests += 1;
  t.last = now;
}

function bounded<V>(map: Map<string, V>, max: number): Map<string, V> {
  if (map.size >= max) {
    const oldest = map.keys().next();
    if (!oldest.done) map.delete(oldest.value);
  }
  return map;
}
