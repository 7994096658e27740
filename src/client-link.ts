import type { HeldFor } from './limiter/scheduler.js';

/**
 * Whether the client of one request is still there. A held request learns that it left through the scheduler's
 * `held` hook; the AbortSignal that undici and the retry back-off need is only made once the request leaves the
 * hold, so the thousands of requests a replica may hold carry no signal, event target or listener each.
 */
export class ClientLink implements HeldFor {
  gone = false;
  held: { clientGone(): void } | null = null;
  private controller: AbortController | undefined;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.gone) this.controller.abort();
    }
    return this.controller.signal;
  }

  leave(): void {
    if (this.gone) return;
    this.gone = true;
    this.controller?.abort();
    const held = this.held;
    this.held = null;
    held?.clientGone();
  }
}
