import { expect } from 'vitest';

export interface DiscordError {
  message: string;
  code: number;
  retry_after?: number;
}

/** Asserts an answer the proxy made itself: the status, its marker header and Discord's error shape. */
export function expectGenerated(
  res: { status: number; headers: Record<string, unknown>; json(): unknown },
  status: number,
): DiscordError {
  expect(res.status).toBe(status);
  expect(res.headers['x-proxy-generated']).toBe('true');
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  const body = res.json() as DiscordError;
  expect(typeof body.message).toBe('string');
  expect(typeof body.code).toBe('number');
  return body;
}
