import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Workers load compiled JavaScript by path, so every run builds first
    // (tsc -b is incremental): a test can never exercise stale output.
    globalSetup: ['./test/setup/build.ts'],
    include: ['packages/*/test/**/*.test.ts', 'workers/test/**/*.test.ts', 'test/**/*.test.ts'],
    // Processes, not threads: tests count fds and mappings of their own process.
    pool: 'forks',
    maxWorkers: 2,
    // The JSON report lets .ci/run print a plain 'N passed, N failed' closing line.
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
