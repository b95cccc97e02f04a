/**
 * The backend registry (a literal table) and resolution: try the preferred backends in order, keep
 * the first that probes ok, and report every one skipped with its reason. There is no silent fallback:
 * the caller gets the skipped list to show, and an error listing all reasons when none works.
 */
import { fail } from '../../errors.js';
import type { Backend, BackendId } from '../backend.js';
import { ortCpu } from './ort-cpu.js';
import { ortWebgpu } from './ort-webgpu.js';
import { rknnBackend } from './rknn-backend.js';
import { rkllmBackend } from './rkllm-backend.js';
import { nativeBackend } from './native/native.js';

export const BACKENDS = { 'ort-cpu': ortCpu, 'ort-webgpu': ortWebgpu, rknn: rknnBackend, rkllm: rkllmBackend, native: nativeBackend } as const satisfies Record<BackendId, Backend>;

export const DEFAULT_BACKENDS: readonly BackendId[] = ['ort-cpu'];

export interface SkippedBackend { readonly id: string; readonly reason: string }
export interface ResolvedBackend { readonly backend: Backend; readonly skipped: readonly SkippedBackend[] }

const isBackendId = (id: string): id is BackendId => Object.hasOwn(BACKENDS, id);

export async function resolveBackend(preferred: readonly string[] = DEFAULT_BACKENDS): Promise<ResolvedBackend> {
  if (preferred.length === 0) throw fail('E_BAD_OPTION', 'no backend requested', { hint: `known backends: ${Object.keys(BACKENDS).join(', ')}` });
  const skipped: SkippedBackend[] = [];
  for (const id of preferred) {
    if (!isBackendId(id)) { skipped.push({ id, reason: `unknown backend (known: ${Object.keys(BACKENDS).join(', ')})` }); continue; }
    const backend = BACKENDS[id];
    const p = await backend.probe();
    if (p.ok) return { backend, skipped };
    skipped.push({ id, reason: p.reason });
  }
  throw fail('E_BACKEND_UNAVAILABLE', `none of the requested backends can run here: ${skipped.map((s) => `${s.id} (${s.reason})`).join('; ')}`,
    { notes: skipped.map((s) => `${s.id}: ${s.reason}`), hint: 'install onnxruntime-node for this platform, or pick another backend' });
}
