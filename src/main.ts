/**
 * The entry point and the only place that reads process.env: builds the parts (parts.ts), listens, handles signals.
 */
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createParts } from './parts.js';
import { startTracing } from './tracing/start.js';

/** Beyond SHUTDOWN_TIMEOUT_MS, App.close() needs at most a few seconds to flush answers and close connections. */
const BACKSTOP_MS = 5000;

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const parts = createParts(config);
  const { log, storeMode: mode } = parts;
  // Off (undefined, the SDK never loaded) unless an OTLP endpoint is configured.
  const tracing = await startTracing(config, log);
  const app = buildApp({ ...parts, tracer: tracing?.tracer });
  await app.admin.listen({ port: config.adminPort, host: config.adminHost });
  await app.proxy.listen({ port: config.port, host: config.host });
  log.info(
    { upstream: config.upstreamUrl, state: mode, port: config.port, adminPort: config.adminPort },
    'proxy ready',
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down');
    // App.close() bounds every step itself; this only guards against a bug there leaving the process up until
    // the orchestrator's SIGKILL, which would lose the log line saying why.
    setTimeout(() => {
      log.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs + BACKSTOP_MS).unref();
    const startedAt = performance.now();
    app.close().then(
      async () => {
        // The spans of the drained requests go out before the exit (bounded inside shutdown()).
        await tracing?.shutdown().catch(() => undefined);
        log.info({ ms: Math.round(performance.now() - startedAt) }, 'shutdown complete');
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // `once`: a second Ctrl-C (or SIGTERM) while draining meets Node's default handler and ends the process at once.
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(`fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
