/**
 * How late requests may reach Discord because this replica is opening connections to it.
 *
 * The global window is kept at admission, and an admitted request normally leaves at once. When the upstream pool
 * has no free connection it opens one first (a TLS handshake to Discord takes tens to hundreds of milliseconds), so
 * requests admitted in a burst on a cold pool arrive later than requests admitted a second after them on warm
 * connections, and Discord can see more than the limit inside one of its seconds. While connections are being
 * opened, and for one window after, admissions keep the windows that much further apart (AdmitInput.windowPadMs).
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';

interface ConnectParams {
  readonly protocol?: string;
  readonly host?: string;
}

/** A pad longer than this would only mean something is badly wrong with the network; the margin covers the rest. */
const MAX_PAD_MS = 1000;

export class ConnectWatch {
  private readonly started: number[] = [];
  /** Connections opened recently: when they finished and how long they took. */
  private recent: { end: number; ms: number }[] = [];
  private readonly onStart = (message: unknown) => {
    if (this.matches(message)) this.started.push(performance.now());
  };
  private readonly onEnd = (message: unknown) => {
    if (!this.matches(message)) return;
    const start = this.started.shift();
    if (start === undefined) return;
    const end = performance.now();
    this.recent.push({ end, ms: end - start });
  };

  constructor(
    private readonly origin: string,
    /** How long a finished connection still matters: the global window with its margin. */
    private readonly windowMs: number,
  ) {
    subscribe('undici:client:beforeConnect', this.onStart);
    subscribe('undici:client:connected', this.onEnd);
    subscribe('undici:client:connectError', this.onEnd);
  }

  /** Extra window length for an admission now, ms: 0 on a warm pool. */
  padMs(): number {
    if (this.started.length === 0 && this.recent.length === 0) return 0;
    const now = performance.now();
    if (this.recent.length > 0) this.recent = this.recent.filter((c) => now - c.end < this.windowMs);
    let pad = 0;
    for (const c of this.recent) pad = Math.max(pad, c.ms);
    for (const start of this.started) pad = Math.max(pad, now - start);
    return Math.min(MAX_PAD_MS, Math.ceil(pad));
  }

  close(): void {
    unsubscribe('undici:client:beforeConnect', this.onStart);
    unsubscribe('undici:client:connected', this.onEnd);
    unsubscribe('undici:client:connectError', this.onEnd);
  }

  private matches(message: unknown): boolean {
    const params = (message as { connectParams?: ConnectParams } | undefined)?.connectParams;
    return params !== undefined && `${params.protocol}//${params.host}` === this.origin;
  }
}
