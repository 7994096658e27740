/**
 * OpenTelemetry traces (OTEL_EXPORTER_OTLP_ENDPOINT): the proxy in process against the fake Discord, exporting to an
 * OTLP/HTTP endpoint this test runs itself. It checks the shape of each request's trace (a SERVER span, a hold span
 * per wait, a CLIENT span per attempt), that a client's traceparent is continued and forwarded as sent, the
 * attributes, and that no token, webhook token or Authorization value is anywhere in what was exported.
 *
 * Spans are read after `flush()`, which returns once the exporter's POST was answered: nothing waits on a timer.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTracing } from '../../src/tracing/start.js';
import type { Tracing } from '../../src/tracing/types.js';
import { BOT_A, BOT_B, startEnv, type TestEnv } from '../helpers/env.js';

const CHANNEL = '100000000000000001';
const WEBHOOK_ID = '300000000000000001';
const webhookToken = `${'w'.repeat(20)}Traced_Webhook-Token${'7'.repeat(28)}`;
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;
const TRACESTATE = 'vendor=opaque-value,other=1';
/** A token of its own for the unsampled request. */
const BOT_Z = BOT_A.replace('secretTokenA', 'secretTokenZ');

/** OTLP/JSON as the exporter sends it (the parts read here). */
interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: OtlpAttribute[];
  status?: { code?: number };
}
interface OtlpExport {
  resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}

/** OTLP's SpanKind numbers. */
const KIND = { internal: 1, server: 2, client: 3 } as const;

/** An OTLP/HTTP endpoint: keeps every body POSTed to /v1/traces, as bytes and parsed. */
class OtlpSink {
  readonly bodies: Buffer[] = [];
  readonly contentTypes: (string | undefined)[] = [];
  private readonly server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') {
        this.bodies.push(Buffer.concat(chunks));
        this.contentTypes.push(req.headers['content-type']);
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  exports(): OtlpExport[] {
    return this.bodies.map((body) => JSON.parse(body.toString('utf8')) as OtlpExport);
  }

  spans(): OtlpSpan[] {
    return this.exports().flatMap((e) =>
      e.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)),
    );
  }
}

const attr = (
  attributes: OtlpAttribute[] | undefined,
  key: string,
): string | number | boolean | undefined => {
  const value = attributes?.find((a) => a.key === key)?.value;
  if (value === undefined) return undefined;
  if (value.intValue !== undefined) return Number(value.intValue);
  return value.stringValue ?? value.boolValue;
};
const nanos = (value: string | number): bigint => BigInt(value);

/** The spans of one trace below its SERVER span, in start order. */
function traceOf(spans: OtlpSpan[], server: OtlpSpan): { holds: OtlpSpan[]; attempts: OtlpSpan[] } {
  const children = spans
    .filter((s) => s.traceId === server.traceId && s.parentSpanId === server.spanId)
    .sort((a, b) => Number(nanos(a.startTimeUnixNano) - nanos(b.startTimeUnixNano)));
  return {
    holds: children.filter((s) => s.name === 'hold' && s.kind === KIND.internal),
    attempts: children.filter((s) => s.kind === KIND.client),
  };
}

describe('OpenTelemetry traces', () => {
  const sink = new OtlpSink();
  let tracing: Tracing;
  let env: TestEnv;
  let spans: OtlpSpan[] = [];

  beforeAll(async () => {
    const endpoint = await sink.start();
    const started = await startTracing({
      tracesEndpoint: `${endpoint}/v1/traces`,
      serviceName: 'proxy-under-test',
    });
    if (!started) throw new Error('tracing did not start with an endpoint set');
    tracing = started;
    // The fake grants one request per second per token while the proxy believes 50: a token's second request in a
    // second draws a global 429, which the proxy retries after the pause.
    env = await startEnv({ globalLimit: 1 }, { tracer: tracing.tracer });

    const traced = await env.call('GET', `/api/v10/channels/${CHANNEL}`, {
      auth: BOT_A,
      headers: { traceparent: TRACEPARENT, tracestate: TRACESTATE },
    });
    expect(traced.status).toBe(200);
    const webhook = await env.call('POST', `/api/v10/webhooks/${WEBHOOK_ID}/${webhookToken}?wait=true`, {
      auth: null,
      body: '{"content":"hello"}',
    });
    expect(webhook.status).toBeLessThan(300);
    const unsampled = await env.call('GET', '/api/v10/users/@me', {
      auth: BOT_Z,
      headers: { traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-00` },
    });
    expect(unsampled.status).toBe(200);
    // BOT_B's first request takes its second; the next one draws the 429 and goes round again.
    expect((await env.call('GET', '/api/v10/users/@me', { auth: BOT_B })).status).toBe(200);
    const retried = await env.call('GET', `/api/v10/channels/${CHANNEL}/messages`, { auth: BOT_B });
    expect(retried.status).toBe(200);
    expect(retried.headers['x-proxy-retries']).toBe('1');

    await tracing.flush();
    spans = sink.spans();
  });

  afterAll(async () => {
    await env?.close();
    await tracing?.shutdown();
    await sink.stop();
  });

  const servers = () => spans.filter((s) => s.kind === KIND.server);
  const serverNamed = (name: string) => {
    const found = servers().filter((s) => s.name === name);
    expect(found, name).toHaveLength(1);
    return found[0]!;
  };

  it('exports OTLP/JSON to the configured endpoint, one SERVER span per sampled request', () => {
    expect(sink.bodies.length).toBeGreaterThan(0);
    for (const type of sink.contentTypes) expect(type).toContain('application/json');
    expect(
      servers()
        .map((s) => s.name)
        .sort(),
    ).toEqual([
      'GET /channels/:id',
      'GET /channels/:id/messages',
      'GET /users/@me',
      'POST /webhooks/:id/:token',
    ]);
  });

  it("continues the client's traceparent and forwards it upstream as the client sent it", () => {
    const server = serverNamed('GET /channels/:id');
    expect(server.traceId).toBe(TRACE_ID);
    expect(server.parentSpanId).toBe(PARENT_ID);

    const upstream = env.fake.received.find((r) => r.path === `/api/v10/channels/${CHANNEL}`);
    const headers = upstream!.rawHeaders;
    const value = (name: string) =>
      headers[headers.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === name) + 1];
    expect(value('traceparent')).toBe(TRACEPARENT);
    expect(value('tracestate')).toBe(TRACESTATE);
  });

  it('starts a new trace without a traceparent, and records nothing for an unsampled one', () => {
    for (const server of servers().filter((s) => s.name !== 'GET /channels/:id')) {
      expect(server.traceId).not.toBe(TRACE_ID);
      expect(server.parentSpanId ?? '').toBe('');
    }
    expect(spans.some((s) => s.traceId === '1'.repeat(32))).toBe(false);
    const upstream = env.fake.received.find((r) => r.identity === BOT_Z);
    expect(upstream!.rawHeaders).toContain(`00-${'1'.repeat(32)}-${'2'.repeat(16)}-00`);
  });

  it('puts a hold span and a CLIENT span for the attempt under each SERVER span, within its time', () => {
    for (const server of servers()) {
      const { holds, attempts } = traceOf(spans, server);
      expect(holds.length, server.name).toBeGreaterThanOrEqual(1);
      expect(attempts.length, server.name).toBeGreaterThanOrEqual(1);
      for (const child of [...holds, ...attempts]) {
        expect(nanos(child.startTimeUnixNano)).toBeGreaterThanOrEqual(nanos(server.startTimeUnixNano));
        expect(nanos(child.endTimeUnixNano)).toBeLessThanOrEqual(nanos(server.endTimeUnixNano));
      }
      // The hold ends before its attempt starts.
      expect(nanos(holds[0]!.endTimeUnixNano)).toBeLessThanOrEqual(nanos(attempts[0]!.startTimeUnixNano));
    }
  });

  it('names route templates, method, status, bucket, retries and times, and the replica in the resource', () => {
    const server = serverNamed('GET /channels/:id');
    expect(attr(server.attributes, 'http.request.method')).toBe('GET');
    expect(attr(server.attributes, 'http.route')).toBe('/channels/:id');
    expect(attr(server.attributes, 'http.response.status_code')).toBe(200);
    expect(attr(server.attributes, 'discord_proxy.bucket')).toBe(`GET /channels/:id c:${CHANNEL}`);
    expect(attr(server.attributes, 'discord_proxy.retries')).toBe(0);
    expect(typeof attr(server.attributes, 'discord_proxy.hold_ms')).toBe('number');
    expect(typeof attr(server.attributes, 'discord_proxy.upstream_ms')).toBe('number');
    const { holds, attempts } = traceOf(spans, server);
    expect(attr(holds[0]!.attributes, 'discord_proxy.hold.outcome')).toBe('admitted');
    expect(attempts[0]!.name).toBe('GET /channels/:id');
    expect(attr(attempts[0]!.attributes, 'url.template')).toBe('/channels/:id');
    expect(attr(attempts[0]!.attributes, 'http.response.status_code')).toBe(200);
    expect(attr(attempts[0]!.attributes, 'http.request.resend_count')).toBeUndefined();

    const webhook = serverNamed('POST /webhooks/:id/:token');
    expect(attr(webhook.attributes, 'discord_proxy.bucket')).toMatch(
      new RegExp(`^POST /webhooks/:id/:token w:${WEBHOOK_ID}:[0-9a-f]{16}$`),
    );

    for (const e of sink.exports()) {
      for (const r of e.resourceSpans) {
        expect(attr(r.resource.attributes, 'service.name')).toBe('proxy-under-test');
        expect(attr(r.resource.attributes, 'service.instance.id')).toBe(hostname());
      }
    }
  });

  it('shows a 429 that was retried as two attempts, with a hold before each', () => {
    const server = serverNamed('GET /channels/:id/messages');
    expect(attr(server.attributes, 'discord_proxy.retries')).toBe(1);
    expect(attr(server.attributes, 'http.response.status_code')).toBe(200);
    const { holds, attempts } = traceOf(spans, server);
    expect(attempts.map((a) => attr(a.attributes, 'http.response.status_code'))).toEqual([429, 200]);
    expect(attempts.map((a) => attr(a.attributes, 'http.request.resend_count'))).toEqual([undefined, 1]);
    expect(attempts[0]!.status?.code).toBe(2); // ERROR: a client span's 4xx
    expect(holds).toHaveLength(2);
    // The second hold is the global pause the 429 asked for, and comes between the two attempts.
    expect(nanos(holds[1]!.startTimeUnixNano)).toBeGreaterThanOrEqual(nanos(attempts[0]!.endTimeUnixNano));
    expect(nanos(holds[1]!.endTimeUnixNano)).toBeLessThanOrEqual(nanos(attempts[1]!.startTimeUnixNano));
    expect(Number(attr(holds[1]!.attributes, 'discord_proxy.hold_ms'))).toBeGreaterThan(0);
  });

  it('exports no token, webhook token or Authorization value, anywhere', () => {
    const exported = Buffer.concat(sink.bodies).toString('utf8');
    const secrets = [
      BOT_A,
      BOT_B,
      BOT_Z,
      ...BOT_A.slice(4).split('.'),
      ...BOT_B.slice(4).split('.'),
      webhookToken,
      webhookToken.slice(-24),
      webhookToken.slice(0, 24),
    ];
    for (const secret of secrets) expect(exported, secret).not.toContain(secret);
    expect(exported).not.toContain(`/webhooks/${WEBHOOK_ID}/`);
    expect(exported.toLowerCase()).not.toContain('authorization');
  });
});
