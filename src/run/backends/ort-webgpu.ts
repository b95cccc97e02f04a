/**
 * ONNX Runtime, WebGPU execution provider (Dawn over Vulkan; onnxruntime-node 1.30 ships it for linux-x64
 * and linux-arm64). On a Rockchip board the adapter is the Mali GPU (PanVK or Arm's driver); in CI it is
 * Mesa's software Vulkan (lavapipe, Mesa ≥ 25: 22.3 gives "No supported adapters").
 *
 * The session is ort-cpu's (same feeds checks, same preallocated outputs: ORT copies a GPU result into the
 * caller's CPU tensor, so `writesInPlace` holds as for the CPU). Ops the WebGPU provider lacks fall back
 * to ORT's CPU kernels inside the session; a brick ORT cannot place at all is an E_BACKEND_UNSUPPORTED.
 *
 * The probe proves an adapter works by running a one-Add graph on it (ORT's session creation is what
 * finds the adapter), and names the Vulkan device and driver it saw. First sessions of a brick compile
 * shaders: 25–40 s on lavapipe, so callers keep sessions open.
 */
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { fail } from '../../errors.js';
import { GraphBuilder } from '../../onnx/builder.js';
import { ORT_LOG } from '../../onnx/ort-log.js';
import type { Backend, ProbeResult } from '../backend.js';
import { loadOrt, openOrtBrick } from './ort-cpu.js';
import { vulkanDevices } from './vulkan.js';

export interface WebgpuProbe { readonly ok: boolean; readonly reason?: string; readonly adapter?: string; readonly driver?: string }

let probing: Promise<WebgpuProbe> | undefined;

/** The probe with the adapter it found (doctor prints it); cached for the process. */
export const probeWebgpu = (): Promise<WebgpuProbe> => (probing ??= probe());

async function probe(): Promise<WebgpuProbe> {
  const vk = vulkanDevices();
  const adapter = vk.ok ? vk.devices[0] : undefined;
  const facts = adapter ? { adapter: `${adapter.name} (${adapter.type})`, driver: [adapter.driverName, adapter.driverInfo].filter(Boolean).join(', ') || undefined } : {};
  // Dawn's Vulkan loader path wants a runtime dir and fails to find adapters without one (CI containers and
  // ssh sessions often have none); /tmp is what it falls back to when the variable is set but empty.
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';
  let ort;
  try {
    ort = await loadOrt();
  } catch (e) {
    return { ok: false, reason: `onnxruntime-node does not load: ${(e as Error).message}`, ...facts };
  }
  if (!ort.listSupportedBackends().some((b) => b.name === 'webgpu'))
    return { ok: false, reason: 'this onnxruntime-node build has no WebGPU execution provider', ...facts };
  if (!vk.ok) return { ok: false, reason: vk.reason };
  try {
    const s = await ort.InferenceSession.create(addModel(), { ...ORT_LOG, executionProviders: ['webgpu'] });
    try {
      const x = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]);
      const y = (await s.run({ x })).y!.data as Float32Array;
      if (![...y].every((v, i) => v === 2 * (i + 1))) return { ok: false, reason: `the WebGPU adapter computed 2·[1,2,3,4] as [${[...y].join(', ')}]`, ...facts };
    } finally {
      await s.release();
    }
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0]!;
    return { ok: false, reason: /adapter/i.test(msg) ? `no WebGPU adapter (${msg}); Mesa's lavapipe needs Mesa ≥ 25` : `WebGPU does not run: ${msg}`, ...facts };
  }
  return { ok: true, ...facts };
}

function addModel(): Uint8Array {
  const g = new GraphBuilder('probe');
  const x = g.input('x', 'float32', [4]);
  g.output(g.op('Add', [x, x], {}, { outputs: ['y'] }), 'float32', [4]);
  return toBinary(ModelProtoSchema, g.model({ opset: 17 }));
}

/** The sentence of ORT's message that names the node (its first line is a source path on some errors). */
const unsupportedNode = (msg: string): string =>
  /(Provider type for [^\n]*? is not set|Could not find an implementation[^\n]*)/.exec(msg)?.[1] ?? msg.split('\n')[0]!;

export const ortWebgpu: Backend = {
  id: 'ort-webgpu',
  async probe(): Promise<ProbeResult> {
    const p = await probeWebgpu();
    return p.ok ? { ok: true } : { ok: false, reason: p.reason ?? 'unknown' };
  },
  open: (brick, dir, opts) => openOrtBrick('webgpu', brick, dir, opts, (e, file) =>
    // ORT's words for a node no provider in the session can take (WebGPU's, with its CPU fallback, included).
    /not (implemented|supported)|NOT_IMPLEMENTED|Could not find an implementation|Provider type for .* is not set/i.test(e.message)
      ? fail('E_BACKEND_UNSUPPORTED', `brick '${brick.name}': the WebGPU provider cannot run ${brick.file}: ${unsupportedNode(e.message)}`,
        { file, hint: `place this brick on the CPU (compile --place ${brick.kind}=cpu)` }, e)
      : fail('E_BRICK_OPEN', `brick '${brick.name}': ONNX Runtime (WebGPU) cannot load ${brick.file}: ${e.message.split('\n')[0]}`, { file }, e)),
};
