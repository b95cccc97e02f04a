#!/usr/bin/env node
// ONNX Runtime telemetry off before anything can load onnxruntime-node (see src/util/no-telemetry.ts);
// the CLI is imported dynamically because static imports would run before this line.
process.env.ORT_DISABLE_TELEMETRY = '1';
const { main } = await import('../dist/cli/main.js');

main(process.argv).then((code) => { process.exitCode = code; });
