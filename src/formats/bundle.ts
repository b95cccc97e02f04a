/**
 * A bundle: what `nanomind compile` writes for one target board, and what the runtime loads. This module is
 * the only reader and writer of its two manifests; it imports nothing from the compiler stages, so the
 * runtime can read a bundle on a board that has no compiler.
 *
 * `bundle.json` — format `nanomind.bundle`, version 1:
 * - `model`: `{id, source}`; `target`: `{name, title, file, sha256}` (the target profile, copied as `target.json`);
 *   `plan`: `{file, sha256}` (the schedule plan, `plan.json`, below).
 * - `bricks[]`: `{name, kind, file, sha256, bytes, dataFiles[{path, sha256, bytes}], inputs[], outputs[],
 *   accelerator, backend ('ort-cpu'|'ort-webgpu'|'rknn'|'rkllm'), format, sourceFormat,
 *   memory{weightsBytes, activationBytes, kvCacheBytes, totalBytes}, artifacts[]}`. `file` is the portable
 *   ONNX brick (runs under ORT anywhere); `artifacts[]` are `{kind, path?, sha256?, bytes?, status, note?}`
 *   with kind `rknn-onnx` (static-shape ONNX for rknn-toolkit2), `calibration` (dataset list), `convert-script`,
 *   `rknn` (the converted model) or `rkllm`, and status `ready` or `needs-conversion` (then `note` says how).
 *   A `needs-conversion` artifact may name the `path` its converted file will have (no sha256/bytes): the
 *   file is not required to exist, and a runtime that finds it there may use it (an `.rkllm` decoder).
 * - `connections[]`: as in bricks.json (`{from, to, merge?}`); `files[]`: tokenizer/config and other files
 *   with sha256; `notes[]`: what the compiler wants a person to know.
 *
 * `plan.json` — format `nanomind.plan`, version 1: `estimate: true` (every number in it is a model-based
 * estimate), `target`, `objective`, `workload`, `assumptions[]`, `placement[]`, `stages[]` (`{id, brick, phase,
 * accelerator, dependsOn[], repeat?, predicted{ms, mJ}}`), `pipeline`, `ringBuffers[]` (`{from, to, slots,
 * slotBytes, tokens, tokensFrom, hidden, dtype}`), `memory` (`domains[]` with RKNN `base_domain_id`, `perBrick`, peak),
 * `affinity[]` (CPU lists, thread counts, NPU core masks), `powerPolicy` (thresholds and the three states),
 * `predicted` (one request's latency, energy, memory).
 *
 * Reading checks every field and reports all problems at once (E_BUNDLE_INVALID), rejects a newer version
 * (E_BUNDLE_VERSION), any path that leaves the bundle (E_BUNDLE_PATH), a missing file (E_BUNDLE_MISSING_FILE)
 * and a size or sha256 that differs (E_BUNDLE_HASH); it returns frozen objects.
 * Version history: 1 — first version.
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { fail } from '../errors.js';
import { sha256File } from '../util/files.js';
import type { Connection, FileEntry, TensorSpec } from './bricks.js';
import { deepFreeze, readJsonFile, writeJsonAtomic } from './json-file.js';
import { BRICK_KINDS, type BrickKind } from './names.js';

export const BUNDLE_FILE = 'bundle.json';
export const BUNDLE_FORMAT = 'nanomind.bundle';
export const BUNDLE_VERSION = 1;
export const PLAN_FILE = 'plan.json';
export const PLAN_FORMAT = 'nanomind.plan';
export const PLAN_VERSION = 1;

export const BUNDLE_BACKENDS = ['ort-cpu', 'ort-webgpu', 'rknn', 'rkllm'] as const;
export type BundleBackend = (typeof BUNDLE_BACKENDS)[number];
export const ARTIFACT_KINDS = ['rknn-onnx', 'calibration', 'convert-script', 'rknn', 'rkllm'] as const;

export interface BrickMemory { readonly weightsBytes: number; readonly activationBytes: number; readonly kvCacheBytes: number; readonly totalBytes: number }
export interface BundleArtifact {
  readonly kind: (typeof ARTIFACT_KINDS)[number];
  readonly path?: string; readonly sha256?: string; readonly bytes?: number;
  readonly status: 'ready' | 'needs-conversion';
  readonly note?: string;
}
export interface BundleBrick {
  readonly name: string; readonly kind: BrickKind; readonly file: string; readonly sha256: string; readonly bytes: number;
  readonly dataFiles: readonly FileEntry[];
  readonly inputs: readonly TensorSpec[]; readonly outputs: readonly TensorSpec[];
  readonly accelerator: string; readonly backend: BundleBackend; readonly format: string; readonly sourceFormat: string;
  readonly memory: BrickMemory;
  readonly artifacts: readonly BundleArtifact[];
}
export interface BundleManifest {
  readonly format: typeof BUNDLE_FORMAT;
  readonly version: number;
  readonly createdBy: string;
  readonly model: { readonly id: string; readonly source: string };
  readonly target: { readonly name: string; readonly title: string; readonly file: string; readonly sha256: string };
  readonly plan: { readonly file: string; readonly sha256: string };
  readonly bricks: readonly BundleBrick[];
  readonly connections: readonly Connection[];
  readonly files: readonly FileEntry[];
  readonly notes: readonly string[];
}

export type PlanPhase = 'encode' | 'embed' | 'prefill' | 'decode';
export interface Predicted { readonly ms: number; readonly mJ: number | null }
export interface PlanStage {
  readonly id: string; readonly brick: string; readonly phase: PlanPhase; readonly accelerator: string;
  readonly dependsOn: readonly string[]; readonly repeat?: 'per-image' | 'per-clip' | 'per-token'; readonly predicted: Predicted;
  /** Tokens one call of the stage processes (the prefill's: the prompt with its image / audio rows); absent for encoders. */
  readonly tokens?: number;
}
export interface RingBufferPlan {
  readonly from: string; readonly to: string; readonly slots: number; readonly slotBytes: number;
  readonly tokens: number; readonly hidden: number; readonly dtype: string; readonly why: string;
  /** Where `tokens` (rows per image / clip) came from: the encoder's output shape, shape inference, or a config key. */
  readonly tokensFrom?: string;
}
export interface MemoryDomainPlan { readonly baseDomainId: number; readonly accelerator: string; readonly bricks: readonly string[]; readonly bytes: number; readonly limitBytes: number | null }
export interface AffinityPlan { readonly brick: string; readonly accelerator: string; readonly cpuList?: string; readonly threads?: number; readonly coreMask?: string; readonly why: string }
export interface PowerPolicyPlan {
  readonly highPercent: number; readonly lowPercent: number;
  readonly states: {
    readonly unconstrained: { readonly when: string; readonly workRate: number };
    readonly proportional: { readonly when: string; readonly alpha: string; readonly scales: readonly string[] };
    readonly critical: { readonly when: string; readonly mode: 'cascade'; readonly order: readonly string[]; readonly passOn: string };
  };
}
export interface Plan {
  readonly format: typeof PLAN_FORMAT;
  readonly version: number;
  readonly estimate: true;
  readonly target: string;
  readonly objective: string;
  readonly workload: { readonly images: number; readonly audioClips: number; readonly promptTokens: number; readonly outputTokens: number; readonly maxContext: number };
  readonly assumptions: readonly string[];
  readonly placement: readonly { readonly brick: string; readonly accelerator: string; readonly backend: string; readonly format: string; readonly route: string }[];
  readonly stages: readonly PlanStage[];
  readonly pipeline: { readonly encoderDecoderOverlap: boolean; readonly description: string };
  readonly ringBuffers: readonly RingBufferPlan[];
  readonly memory: { readonly domains: readonly MemoryDomainPlan[]; readonly perBrick: Readonly<Record<string, BrickMemory>>; readonly ringBytes: number; readonly peakBytes: number; readonly boardBytes: number | null };
  readonly affinity: readonly AffinityPlan[];
  readonly powerPolicy: PowerPolicyPlan;
  readonly predicted: { readonly latencyMs: number; readonly energyMj: number | null; readonly memoryBytes: number };
}

export interface Bundle { readonly dir: string; readonly manifest: BundleManifest; readonly plan: Plan }

export async function writeBundleManifest(dir: string, m: BundleManifest): Promise<void> { await writeJsonAtomic(join(dir, BUNDLE_FILE), m); }
export async function writePlan(dir: string, p: Plan): Promise<void> { await writeJsonAtomic(join(dir, PLAN_FILE), p); }

type Obj = Record<string, any>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
const HEX64 = /^[0-9a-f]{64}$/;
const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

/** A relative path that stays inside the bundle (no `..`, not absolute, no NUL). */
export const staysInside = (p: string): boolean => {
  if (!p || isAbsolute(p) || p.includes('\0') || /^[a-zA-Z]:/.test(p)) return false;
  const n = normalize(p);
  return n !== '..' && !n.startsWith('..' + sep) && !n.startsWith('../') && n !== '.';
};

/** Reads and checks `bundle.json` and `plan.json`; with `checkHashes` (default) verifies every file's size and sha256. */
export async function readBundle(dir: string, opts: { checkHashes?: boolean } = {}): Promise<Bundle> {
  const file = join(dir, BUNDLE_FILE);
  const raw = await readJsonFile(file, 'E_BUNDLE_INVALID');
  if (!isObj(raw)) throw fail('E_BUNDLE_INVALID', `${file}: not a JSON object`, { file });
  if (typeof raw.version === 'number' && raw.version > BUNDLE_VERSION)
    throw fail('E_BUNDLE_VERSION', `${file}: format v${raw.version} is newer than this nanomind (≤ v${BUNDLE_VERSION})`, { file, hint: 'upgrade nanomind or compile the bundle again' });
  const issues: string[] = [];
  const paths: BundlePath[] = [];
  checkManifest(raw, issues, paths);
  const escaping = paths.filter((p) => typeof p.path === 'string' && !staysInside(p.path));
  if (escaping.length)
    throw fail('E_BUNDLE_PATH', `${file}: ${escaping.length} path(s) leave the bundle directory: ${escaping[0].what} '${escaping[0].path}'`,
      { file, notes: escaping.map((p) => `${p.what}: '${p.path}'`), hint: 'a bundle may only reference files inside its own directory' });
  if (issues.length) throw fail('E_BUNDLE_INVALID', `${file}: ${issues.length} problem(s): ${issues[0]}`, { file, notes: issues });
  const m = raw as unknown as BundleManifest;
  const planFile = join(dir, m.plan.file);
  const planRaw = await readJsonFile(planFile, 'E_BUNDLE_INVALID');
  if (isObj(planRaw) && typeof planRaw.version === 'number' && planRaw.version > PLAN_VERSION)
    throw fail('E_BUNDLE_VERSION', `${planFile}: plan format v${planRaw.version} is newer than this nanomind (≤ v${PLAN_VERSION})`, { file: planFile, hint: 'upgrade nanomind' });
  const planIssues: string[] = [];
  checkPlan(planRaw, planIssues, new Set(m.bricks.map((b) => b.name)));
  if (planIssues.length) throw fail('E_BUNDLE_INVALID', `${planFile}: ${planIssues.length} problem(s): ${planIssues[0]}`, { file: planFile, notes: planIssues });
  await checkFiles(dir, paths, opts.checkHashes ?? true);
  return deepFreeze({ dir, manifest: m, plan: planRaw as unknown as Plan });
}

/** A path bundle.json names; `optional`: a file that conversion will write, not yet required. */
interface BundlePath { readonly path: string; readonly sha256?: string; readonly bytes?: number; readonly what: string; readonly optional?: boolean }

function checkManifest(m: Obj, issues: string[], paths: BundlePath[]): void {
  const str = (v: unknown, at: string) => { if (typeof v !== 'string' || !v) issues.push(`${at}: expected a non-empty string`); };
  const file = (f: unknown, at: string, what: string, hashed = true) => {
    if (!isObj(f)) { issues.push(`${at}: expected {path, sha256, bytes}`); return; }
    str(f.path, `${at}.path`);
    if (hashed && !(typeof f.sha256 === 'string' && HEX64.test(f.sha256))) issues.push(`${at}.sha256: expected 64 hex chars`);
    if (hashed && !isCount(f.bytes)) issues.push(`${at}.bytes: expected a byte count`);
    if (typeof f.path === 'string') paths.push({ path: f.path, sha256: f.sha256, bytes: f.bytes, what });
  };
  if (m.format !== BUNDLE_FORMAT) issues.push(`format: expected '${BUNDLE_FORMAT}'`);
  if (typeof m.version !== 'number') issues.push('version: expected a number');
  str(m.createdBy, 'createdBy');
  if (!isObj(m.model)) issues.push('model: expected {id, source}'); else { str(m.model.id, 'model.id'); str(m.model.source, 'model.source'); }
  if (!isObj(m.target)) issues.push('target: expected {name, title, file, sha256}');
  else { str(m.target.name, 'target.name'); file({ path: m.target.file, sha256: m.target.sha256, bytes: 0 }, 'target', 'target profile'); }
  if (!isObj(m.plan)) issues.push('plan: expected {file, sha256}'); else file({ path: m.plan.file, sha256: m.plan.sha256, bytes: 0 }, 'plan', 'plan');
  const bricks = Array.isArray(m.bricks) ? m.bricks : (issues.push('bricks: expected an array'), []);
  const names = new Set<string>();
  bricks.forEach((b: unknown, i: number) => {
    const at = `bricks[${i}]`;
    if (!isObj(b)) { issues.push(`${at}: expected an object`); return; }
    str(b.name, `${at}.name`);
    if (typeof b.name === 'string') { if (names.has(b.name)) issues.push(`${at}.name: duplicate '${b.name}'`); names.add(b.name); }
    if (!BRICK_KINDS.includes(b.kind)) issues.push(`${at}.kind: expected one of ${BRICK_KINDS.join(', ')}`);
    file({ path: b.file, sha256: b.sha256, bytes: b.bytes }, at, `brick '${b.name}'`);
    if (!Array.isArray(b.dataFiles)) issues.push(`${at}.dataFiles: expected an array`);
    else b.dataFiles.forEach((d: unknown, j: number) => file(d, `${at}.dataFiles[${j}]`, `brick '${b.name}' data`));
    for (const k of ['inputs', 'outputs'])
      if (!Array.isArray(b[k]) || !b[k].every((t: Obj) => isObj(t) && typeof t.name === 'string' && typeof t.dtype === 'string')) issues.push(`${at}.${k}: expected [{name, dtype, shape}]`);
    str(b.accelerator, `${at}.accelerator`);
    if (!BUNDLE_BACKENDS.includes(b.backend)) issues.push(`${at}.backend: expected one of ${BUNDLE_BACKENDS.join(', ')}`);
    str(b.format, `${at}.format`); str(b.sourceFormat, `${at}.sourceFormat`);
    if (!isObj(b.memory) || !['weightsBytes', 'activationBytes', 'kvCacheBytes', 'totalBytes'].every((k) => isCount(b.memory[k]))) issues.push(`${at}.memory: expected {weightsBytes, activationBytes, kvCacheBytes, totalBytes} byte counts`);
    if (!Array.isArray(b.artifacts)) issues.push(`${at}.artifacts: expected an array`);
    else b.artifacts.forEach((a: Obj, j: number) => {
      const aat = `${at}.artifacts[${j}]`;
      if (!isObj(a) || !ARTIFACT_KINDS.includes(a.kind)) { issues.push(`${aat}.kind: expected one of ${ARTIFACT_KINDS.join(', ')}`); return; }
      if (a.status !== 'ready' && a.status !== 'needs-conversion') issues.push(`${aat}.status: expected 'ready' or 'needs-conversion'`);
      if (a.path !== undefined && a.status === 'needs-conversion') {
        // Where the converted file will go: checked to stay inside the bundle, not required to exist.
        str(a.path, `${aat}.path`);
        if (a.sha256 !== undefined || a.bytes !== undefined) issues.push(`${aat}: a needs-conversion artifact has no sha256/bytes yet`);
        if (typeof a.path === 'string') paths.push({ path: a.path, what: `brick '${b.name}' ${a.kind} (not converted yet)`, optional: true });
      } else if (a.path !== undefined) file(a, aat, `brick '${b.name}' ${a.kind}`);
      else if (a.status === 'ready') issues.push(`${aat}: a ready artifact needs a path`);
    });
  });
  if (!Array.isArray(m.connections)) issues.push('connections: expected an array');
  else m.connections.forEach((c: Obj, i: number) => {
    for (const end of ['from', 'to'] as const) {
      const s = c?.[end];
      if (typeof s !== 'string' || !names.has(s.slice(0, s.indexOf('.')))) issues.push(`connections[${i}].${end}: expected 'brick.tensor' naming a brick of this bundle`);
    }
  });
  if (!Array.isArray(m.files)) issues.push('files: expected an array'); else m.files.forEach((f: unknown, i: number) => file(f, `files[${i}]`, 'file'));
  if (!Array.isArray(m.notes) || !m.notes.every((n: unknown) => typeof n === 'string')) issues.push('notes: expected an array of strings');
}

function checkPlan(p: unknown, issues: string[], bricks: ReadonlySet<string>): void {
  if (!isObj(p)) { issues.push('not a JSON object'); return; }
  if (p.format !== PLAN_FORMAT) issues.push(`format: expected '${PLAN_FORMAT}'`);
  if (typeof p.version !== 'number') issues.push('version: expected a number');
  if (p.estimate !== true) issues.push('estimate: expected true (plan figures are model-based estimates)');
  for (const k of ['target', 'objective']) if (typeof p[k] !== 'string') issues.push(`${k}: expected a string`);
  if (!isObj(p.workload) || !['images', 'audioClips', 'promptTokens', 'outputTokens', 'maxContext'].every((k) => isCount(p.workload[k]))) issues.push('workload: expected counts images, audioClips, promptTokens, outputTokens, maxContext');
  for (const k of ['assumptions', 'placement', 'stages', 'ringBuffers', 'affinity']) if (!Array.isArray(p[k])) issues.push(`${k}: expected an array`);
  (Array.isArray(p.placement) ? p.placement : []).forEach((x: Obj, i: number) => { if (!bricks.has(x?.brick) || typeof x?.accelerator !== 'string') issues.push(`placement[${i}]: expected {brick of this bundle, accelerator, ...}`); });
  const ids = new Set((Array.isArray(p.stages) ? p.stages : []).map((s: Obj) => s?.id));
  (Array.isArray(p.stages) ? p.stages : []).forEach((s: Obj, i: number) => {
    const at = `stages[${i}]`;
    if (!isObj(s) || typeof s.id !== 'string') { issues.push(`${at}: expected {id, brick, phase, accelerator, dependsOn, predicted}`); return; }
    if (!bricks.has(s.brick)) issues.push(`${at}.brick: no brick '${s.brick}' in this bundle`);
    if (!['encode', 'embed', 'prefill', 'decode'].includes(s.phase)) issues.push(`${at}.phase: expected encode, embed, prefill or decode`);
    if (!Array.isArray(s.dependsOn) || !s.dependsOn.every((d: unknown) => ids.has(d))) issues.push(`${at}.dependsOn: expected ids of other stages`);
    if (!isObj(s.predicted) || typeof s.predicted.ms !== 'number') issues.push(`${at}.predicted: expected {ms, mJ}`);
    if (s.tokens !== undefined && !isCount(s.tokens)) issues.push(`${at}.tokens: expected a count`);
  });
  (Array.isArray(p.ringBuffers) ? p.ringBuffers : []).forEach((r: Obj, i: number) => {
    if (!isObj(r) || !(Number.isSafeInteger(r.slots) && r.slots > 0) || !(Number.isSafeInteger(r.slotBytes) && r.slotBytes > 0) || typeof r.dtype !== 'string')
      issues.push(`ringBuffers[${i}]: expected {from, to, slots > 0, slotBytes > 0, tokens, hidden, dtype}`);
  });
  if (!isObj(p.memory) || !Array.isArray(p.memory.domains) || !isCount(p.memory.peakBytes)) issues.push('memory: expected {domains[], perBrick, ringBytes, peakBytes, boardBytes}');
  const pp = p.powerPolicy;
  if (!isObj(pp) || typeof pp.highPercent !== 'number' || typeof pp.lowPercent !== 'number' || !(pp.lowPercent < pp.highPercent) || !isObj(pp.states))
    issues.push('powerPolicy: expected {highPercent > lowPercent, states}');
  if (!isObj(p.predicted) || typeof p.predicted.latencyMs !== 'number') issues.push('predicted: expected {latencyMs, energyMj, memoryBytes}');
}

async function checkFiles(dir: string, files: readonly BundlePath[], hashes: boolean): Promise<void> {
  for (const f of files) {
    if (f.optional) continue;
    const full = join(dir, f.path);
    const st = await stat(full).catch(() => undefined);
    if (!st?.isFile()) throw fail('E_BUNDLE_MISSING_FILE', `${join(dir, BUNDLE_FILE)}: ${f.what} file '${f.path}' is missing`, { file: full, hint: 'copy the whole bundle directory, or compile it again' });
    if (!hashes || !f.sha256) continue;
    if ((f.bytes && st.size !== f.bytes) || (await sha256File(full)) !== f.sha256)
      throw fail('E_BUNDLE_HASH', `${f.what} file '${f.path}' does not match its ${f.bytes && st.size !== f.bytes ? 'size' : 'sha256'} in ${BUNDLE_FILE}`,
        { file: full, hint: 'the file changed after compiling; compile the bundle again or restore the file' });
  }
}
