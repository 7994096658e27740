import { createServer, type Server } from 'node:http';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectWatch } from '../../src/connect-watch.js';

describe('ConnectWatch', () => {
  let server: Server;
  let origin: string;
  beforeAll(async () => {
    server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    origin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('pads the window while and shortly after the upstream pool opens connections, not on a warm pool', async () => {
    const watch = new ConnectWatch(origin, 300);
    const pool = new Pool(origin, { connections: 4 });
    try {
      expect(watch.padMs()).toBe(0);
      const first = await pool.request({ path: '/', method: 'GET' });
      await first.body.text();
      // A connection was just opened: its setup time pads admissions for one window.
      expect(watch.padMs()).toBeGreaterThan(0);
      await new Promise((resolve) => setTimeout(resolve, 350));
      // Warm: the same connection is reused and nothing pads.
      const second = await pool.request({ path: '/', method: 'GET' });
      await second.body.text();
      expect(watch.padMs()).toBe(0);
    } finally {
      await pool.close();
      watch.close();
    }
  });

  it('ignores connections to other origins', async () => {
    const watch = new ConnectWatch('http://127.0.0.1:1', 300);
    const pool = new Pool(origin, { connections: 1 });
    try {
      const res = await pool.request({ path: '/', method: 'GET' });
      await res.body.text();
      expect(watch.padMs()).toBe(0);
    } finally {
      await pool.close();
      watch.close();
    }
  });
});
