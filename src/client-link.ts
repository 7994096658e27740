import type { HeldFor } from './limiter/scheduler.js';

/**
 * What undici needs of a request's abort signal: it accepts an EventEmitter, checks that it has `on`, and uses
 * `aborted`, `once('abort')` and `removeListener('abort')`.
 */
export interface AbortSource {
  readonly aborted: boolean;
  on(event: 'abort', listener: () => void): unknown;
  once(event: 'abort', listener: () => void): unknown;
  removeListener(event: 'abort', listener: () => void): unknown;
}

/**
 * Whether the client of one request is still there. A held request learns that it left through the scheduler's
 * `held` hook. Upstream, the link itself is the abort signal: undici takes an EventEmitter-like object with an
 * 'abort' event, and an AbortController per request (an event target, maps, listeners) was a few percent of the
 * proxy's CPU and a few hundred bytes of every held request.
 */
export class ClientLink implements HeldFor, AbortSource {
  gone = false;
  held: { clientGone(): void } | null = null;
  private listeners: (() => void)[] | undefined;

  get aborted(): boolean {
    return this.gone;
  }

  once(_event: 'abort', listener: () => void): this {
    if (this.listeners) this.listeners.push(listener);
    else this.listeners = [listener];
    return this;
  }

  /** 'abort' happens at most once, so a listener added with on() is a once() listener. */
  on(event: 'abort', listener: () => void): this {
    return this.once(event, listener);
  }

  removeListener(_event: 'abort', listener: () => void): this {
    const at = this.listeners?.indexOf(listener) ?? -1;
    if (at !== -1) this.listeners!.splice(at, 1);
    return this;
  }

  leave(): void {
    if (this.gone) return;
    this.gone = true;
    const held = this.held;
    this.held = null;
    held?.clientGone();
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) for (const listener of listeners) listener();
  }
}
