import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { failureKind } from '../../src/upstream.js';

function osError(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${syscall} ${code}`), { code, syscall, errno: -1 });
}

describe('upstream failure kinds: what may be sent again', () => {
  it('reads unreachable hosts and networks as connect failures only when connect() reported them', () => {
    for (const code of ['EHOSTUNREACH', 'ENETUNREACH', 'ECONNREFUSED']) {
      expect(failureKind(osError(code, 'connect'))).toBe('connect');
      // The same codes on an established socket: Discord may have the request, so a POST must not go again.
      expect(failureKind(osError(code, 'read'))).toBe('socket');
      expect(failureKind(osError(code, 'write'))).toBe('socket');
    }
  });

  it('keeps name resolution and undici connect errors as connect failures, and looks into causes', () => {
    expect(failureKind(osError('ENOTFOUND', 'getaddrinfo'))).toBe('connect');
    expect(failureKind({ code: 'UND_ERR_CONNECT_TIMEOUT' })).toBe('connect');
    expect(failureKind(new Error('fetch failed', { cause: osError('EHOSTUNREACH', 'read') }))).toBe('socket');
    expect(failureKind(new Error('wrapped', { cause: osError('ECONNREFUSED', 'connect') }))).toBe('connect');
    expect(failureKind({ code: 'UND_ERR_HEADERS_TIMEOUT' })).toBe('timeout');
    expect(failureKind({ code: 'ECONNRESET', syscall: 'read' })).toBe('socket');
  });

  it('sees a real refused connection as a connect failure', async () => {
    // Port 1 on loopback: nothing listens there, so the OS refuses the connect.
    const error = await new Promise<unknown>((resolve) => {
      const socket = connect(1, '127.0.0.1');
      socket.once('error', resolve);
    });
    expect(failureKind(error)).toBe('connect');
  });
});
