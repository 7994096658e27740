import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Tests that start nothing (no redis-server, proxy, fake Discord or other process) and keep their time under their
 * own control (fake timers or an injected clock): they may share the CPU with each other.
 */
const UNIT = ['test/unit/**/*.test.ts', 'test/contract/memory-store.test.ts', 'test/docs.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Measured with --coverage (npm test passes it): code run in the test processes only, so a proxy started as its
    // own process counts nothing. The thresholds sit a few points under what the whole suite reaches, to catch
    // a change that leaves code untested without failing on noise.
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'json-summary'],
      // What the whole suite reached when these were set: statements 89.4, branches 88.7, functions 86.6, lines 90.9.
      thresholds: { statements: 86, branches: 85, functions: 83, lines: 87 },
    },
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: UNIT,
          // Every core (vitest's default leaves one free: a single worker on two cores). The integration project
          // starts once these are done, so they never share the CPU with its timing.
          maxWorkers: '100%',
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...UNIT],
          // One real redis-server for the whole run (the unit project needs none).
          globalSetup: ['test/helpers/global-setup.ts'],
          // Timing-sensitive tests measure windows at the fake; two cores do not leave room for many in parallel.
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
