/**
 * The public server's requests still being answered. Fastify's close() cannot tell: the proxy hijacks every reply,
 * and on Node 20 server.close() leaves a keep-alive socket open after its last response (until keepAliveTimeout),
 * so waiting on the server alone would hang for a minute.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { type Clock, realClock } from '../limiter/clock.js';

export class Drain {
  private readonly open = new Set<ServerResponse>();
  private draining = false;
  private onIdle: (() => void) | undefined;

  /** `clock`: the time wait() counts with, a parameter so that a test can assert the exact deadline. */
  constructor(
    private readonly server: Server,
    private readonly clock: Clock = realClock,
  ) {}

  get size(): number {
    return this.open.size;
  }

  track(req: IncomingMessage, res: ServerResponse): void {
    this.open.add(res);
    const socket = req.socket;
    // A response queued behind a pipelined one never emits 'close' when its socket goes: watch the socket too.
    const done = () => {
      res.off('close', done);
      socket.off('close', done);
      this.open.delete(res);
      if (this.draining) this.server.closeIdleConnections();
      if (this.open.size === 0) this.onIdle?.();
    };
    res.once('close', done);
    socket.once('close', done);
  }

  /** From now on each socket closes as soon as its response is done, and says so in the response. */
  begin(): void {
    this.draining = true;
    for (const res of this.open) if (!res.headersSent) res.setHeader('connection', 'close');
    this.server.closeIdleConnections();
  }

  /** Resolves true once every tracked response is done, false if `ms` passes first. */
  wait(ms: number): Promise<boolean> {
    if (this.open.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(
        () => {
          this.onIdle = undefined;
          resolve(false);
        },
        Math.max(0, ms),
      );
      this.onIdle = () => {
        this.clock.clearTimeout(timer);
        this.onIdle = undefined;
        resolve(true);
      };
    });
  }

  cut(): void {
    this.server.closeAllConnections();
  }
}
