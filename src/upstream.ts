/**
 * The one connection pool to Discord. Every request goes to the configured origin and nowhere else; errors are
 * mapped to the few kinds the proxy acts on, because what may be retried depends on whether Discord could have
 * seen the request at all.
 */

import type { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { type Dispatcher, Pool } from 'undici';
import type { AbortSource } from './client-link.js';

export interface UpstreamOptions {
  readonly url: string;
  readonly connections: number;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
}

export interface UpstreamRequest {
  readonly method: string;
  /** Path and query exactly as the client sent them. */
  readonly path: string;
  /** Flat [name, value, name, value, …] list, in the client's order and case. */
  readonly headers: string[];
  readonly body: Buffer | Readable | null;
  readonly signal?: AbortSource;
}

/**
 * - `connect`: no connection could be made; Discord never saw the request, so any method may be sent again.
 * - `timeout`: no answer in time; Discord may have carried it out.
 * - `socket`: the connection broke mid-way; Discord may have carried it out.
 * - `aborted`: our client went away.
 */
export type UpstreamFailureKind = 'connect' | 'timeout' | 'socket' | 'aborted';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamFailureKind,
    options?: ErrorOptions,
  ) {
    super(`upstream request failed: ${kind}`, options);
    this.name = 'UpstreamError';
  }
}

/** Failures that can only happen before a connection exists: name resolution and undici's connect phase. */
const CONNECT_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CONNECT']);
/**
 * Failures the OS reports for connect() and for reads and writes on an established socket alike (a route to
 * Discord lost mid-request is EHOSTUNREACH on read): only the connect syscall proves Discord never saw the request.
 */
const CONNECT_SYSCALL_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH']);
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

export function failureKind(error: unknown): UpstreamFailureKind {
  const code = (error as { code?: string } | undefined)?.code ?? '';
  const name = (error as { name?: string } | undefined)?.name ?? '';
  if (code === 'UND_ERR_ABORTED' || name === 'AbortError') return 'aborted';
  if (CONNECT_CODES.has(code)) return 'connect';
  if (CONNECT_SYSCALL_CODES.has(code)) {
    return (error as { syscall?: string }).syscall === 'connect' ? 'connect' : 'socket';
  }
  if (TIMEOUT_CODES.has(code)) return 'timeout';
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  if (cause && cause !== error) {
    const inner = failureKind(cause);
    if (inner !== 'socket') return inner;
  }
  return 'socket';
}

export class Upstream {
  private readonly pool: Pool;

  constructor(private readonly options: UpstreamOptions) {
    this.pool = new Pool(options.url, {
      connections: options.connections,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: { timeout: options.connectTimeoutMs },
    });
  }

  async send(req: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    try {
      return await this.pool.request({
        method: req.method as Dispatcher.HttpMethod,
        path: req.path,
        headers: req.headers,
        body: req.body,
        // undici documents EventEmitter signals and uses only once/removeListener('abort') and `aborted`.
        signal: req.signal as EventEmitter | undefined,
        headersTimeout: this.options.timeoutMs,
        bodyTimeout: this.options.timeoutMs,
      });
    } catch (error) {
      throw new UpstreamError(failureKind(error), { cause: error });
    }
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}
