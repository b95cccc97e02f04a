import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // ORT sessions are CPU heavy; two workers match the 2-core CI machine.
    maxWorkers: 2,
    pool: 'forks',
    // ONNX Runtime telemetry off in every test process (forks: real setenv) and the CLIs they start.
    env: { ORT_DISABLE_TELEMETRY: '1' },
  },
});
