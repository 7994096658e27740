/**
 * A byte bound on the bodies a replica keeps in memory while their requests are held. A body small enough
 * (RETRY_BODY_LIMIT_BYTES) is read whole before its request is held, so that a 429 can be retried for the client;
 * without a bound, thousands of held uploads would take the process out of memory and every held request with it.
 * Past HELD_BODY_LIMIT_BYTES a new body is not read at all: it waits in the client's socket (TCP back-pressure
 * holds it, not the heap) and streams through once when its request is admitted, like a large upload.
 */
import type { ServerResponse } from 'node:http';

export class HeldBodies {
  private held = 0;

  constructor(
    private readonly limitBytes: number,
    private readonly onChange: (bytes: number) => void = () => {},
  ) {}

  /** Bytes of bodies kept in memory right now. */
  get bytes(): number {
    return this.held;
  }

  /**
   * Reserves `bytes` for the body of the request answered through `res`, until that answer closes (sent, failed
   * or abandoned: 'close' is emitted in every case). False when the bound would be passed.
   */
  take(bytes: number, res: ServerResponse): boolean {
    if (this.held + bytes > this.limitBytes) return false;
    this.held += bytes;
    this.onChange(bytes);
    res.once('close', () => {
      this.held -= bytes;
      this.onChange(-bytes);
    });
    return true;
  }
}
