/**
 * Turns ONNX Runtime's telemetry off. onnxruntime-node (1.30, Linux and Windows) otherwise creates
 * `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` with a device id and an event store queued for
 * Microsoft's collector. The native library reads ORT_DISABLE_TELEMETRY with getenv when it creates
 * its environment, so the variable must be set in the real process environment before the first
 * session: every module that loads onnxruntime-node, or starts a worker thread that may, imports this
 * module first (ES modules evaluate their imports in order). Worker threads cannot set it themselves:
 * their process.env is a copy that native code never sees. bin/nanomind.js also sets it before anything.
 * test/privacy.test.ts checks both the import order and the result (nothing written under HOME).
 */
process.env.ORT_DISABLE_TELEMETRY = '1';

export const TELEMETRY_OFF = true;
