/**
 * The time a limiter component decides with: a monotonic "now" in milliseconds and one-shot timers. Components take
 * it as a constructor parameter so that tests can decide what time it is (a manual clock, or vitest's fake timers)
 * and assert exact deadlines instead of wall-clock ranges that a busy machine stretches.
 */

/** What a timer must offer its owner besides being cleared. Node's `Timeout` fits, and so do fake timers'. */
export interface Timer {
  /** Lets the process exit while this timer is the only thing pending. */
  unref(): unknown;
}

export interface Clock {
  /** Milliseconds on a monotonic scale (only differences mean anything). */
  now(): number;
  setTimeout(callback: () => void, ms: number): Timer;
  clearTimeout(timer: Timer): void;
}

/**
 * performance.now() and Node's timers. Each is looked up on the global object at the moment of the call, not
 * captured when this module loads, so that `vi.useFakeTimers()` in a test also reaches components built with the
 * default clock.
 */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};
