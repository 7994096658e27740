import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Timing-sensitive tests measure windows at the fake; two cores do not leave room for many in parallel.
    fileParallelism: false,
    pool: 'forks',
  },
});
