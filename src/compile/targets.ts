/**
 * Target profiles (`targets/*.json`, schema in `targets/schema.json`): the boards nanomind compiles for.
 *
 * Every number in a profile is a quantity `{value, unit?, source, note?}` whose `source` names an entry of
 * the profile's `sources` table (datasheet, vendor benchmark, measurement, paper, derived, assumption);
 * a bare number anywhere but the top-level `version` is a problem, and so is a null value whose source is
 * not `unmeasured` and carries no note. The loader checks the schema's rules by hand and reports every
 * problem at once, so one run shows everything wrong with a hand-edited profile.
 */
import { readdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail } from '../errors.js';
import { deepFreeze, readJsonFile } from '../formats/json-file.js';
import { WEIGHT_FORMATS, type WeightFormat } from './formats.js';

export const TARGET_FORMAT = 'nanomind.target';
export const TARGET_VERSION = 1;

/** `targets/` ships in the package beside `dist/` (and beside `src/` in a checkout). */
export const TARGETS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'targets');

export const SOURCE_KINDS = ['datasheet', 'vendor-doc', 'vendor-benchmark', 'measurement', 'paper', 'blog', 'derived', 'assumption', 'unmeasured'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];
export const ACCELERATOR_KINDS = ['cpu', 'gpu', 'npu'] as const;
export type AcceleratorKind = (typeof ACCELERATOR_KINDS)[number];
export const BACKENDS = ['ort-cpu', 'ort-webgpu', 'rknn'] as const;
export type BackendName = (typeof BACKENDS)[number];
export const COMPUTE_DTYPES = ['fp32', 'fp16', 'int8'] as const;
export type ComputeDtype = (typeof COMPUTE_DTYPES)[number];

export interface SourceRef { readonly kind: SourceKind; readonly title: string; readonly url?: string; readonly note?: string }
export interface Quantity { readonly value: number | null; readonly unit?: string; readonly source: string; readonly note?: string }

export interface AcceleratorProfile {
  readonly id: string;
  readonly kind: AcceleratorKind;
  readonly title: string;
  readonly backend: BackendName;
  readonly cores: Quantity;
  readonly peakGops: Readonly<Partial<Record<ComputeDtype, Quantity>>>;
  /** Fraction of peak compute reached on transformer layers. */
  readonly computeEfficiency: Quantity;
  /** Fraction of the board's peak bandwidth this unit sustains alone. */
  readonly memoryEfficiency: Quantity;
  /** Fixed cost per brick call (submission, sync). */
  readonly launchOverheadMs: Quantity;
  /** Added per graph node of a call (kernel dispatch); absent: 0. `bench --calibrate` measures it on the host. */
  readonly nodeOverheadMs?: Quantity;
  /** Added per input and output tensor of a call (feed / fetch marshalling); absent: 0. */
  readonly tensorOverheadMs?: Quantity;
  /** Added per node and element it touches (rows × hidden: element-wise work the FLOP count omits); absent: 0. */
  readonly nodeElementNs?: Quantity;
  /** Power drawn above board idle while busy. */
  readonly activePowerW: Quantity;
  readonly formats: readonly WeightFormat[];
  /** A vendor LLM runtime that runs decoders (dynamic shapes) on a static-shape unit, e.g. RKLLM. */
  readonly llm?: { readonly runtime: 'rkllm'; readonly formats: readonly WeightFormat[]; readonly source: string };
  readonly staticShapes: boolean;
  readonly maxOpset?: Quantity;
  readonly unsupportedOps?: readonly string[];
  /** Bytes one memory domain (RKNN IOMMU domain) can map. */
  readonly memoryDomainBytes?: Quantity;
  readonly coreMask?: string;
  readonly cpuList?: string;
}

export interface TargetProfile {
  readonly format: typeof TARGET_FORMAT;
  readonly version: number;
  readonly name: string;
  readonly title: string;
  readonly default?: boolean;
  readonly soc: string;
  readonly sources: Readonly<Record<string, SourceRef>>;
  readonly memory: { readonly totalBytes: Quantity; readonly peakGBps: Quantity; readonly sustainedGBps: Quantity };
  readonly storage: { readonly readMBps: Quantity };
  readonly accelerators: readonly AcceleratorProfile[];
  readonly power: { readonly idleW: Quantity; readonly cameraW: Quantity; readonly microphoneW: Quantity };
  readonly battery: { readonly capacityMah: Quantity; readonly voltage: Quantity; readonly converterEfficiency: Quantity };
  readonly powerPolicy: { readonly highPercent: Quantity; readonly lowPercent: Quantity };
  /**
   * Work nanomind's own runtime does around the brick calls, on the CPU that drives it: the generation loop
   * per decoder call (feeds, KV hand-over, sampling: one per generated token) and an image's preprocessing
   * (decode, resize, normalize: one per image, a fixed part plus a part per megapixel of the processed
   * image). Absent: 0 (the vendor profiles do not know them).
   */
  readonly runtime?: { readonly tokenLoopMs: Quantity; readonly prefillLoopMs?: Quantity; readonly imagePreprocessMs: Quantity; readonly imagePreprocessMsPerMpx: Quantity };
}

/** A quantity's value, or undefined when it is not known. */
export const val = (q: Quantity | undefined): number | undefined => (q && typeof q.value === 'number' ? q.value : undefined);

export async function listTargets(dir = TARGETS_DIR): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.json') && f !== 'schema.json').map((f) => f.slice(0, -5)).sort();
}

/** Loads `targets/<name>.json`, or a profile file when given a path. */
export async function loadTarget(nameOrPath: string, dir = TARGETS_DIR): Promise<TargetProfile> {
  const isPath = nameOrPath.endsWith('.json') || nameOrPath.includes('/');
  const file = isPath ? resolve(nameOrPath) : join(dir, `${nameOrPath}.json`);
  if (!isPath && !(await listTargets(dir)).includes(nameOrPath))
    throw fail('E_TARGET_NOT_FOUND', `no target profile '${nameOrPath}'`, { hint: `--target one of: ${(await listTargets(dir)).join(', ')} (or a path to a profile .json)` });
  const raw = await readJsonFile(file, 'E_TARGET_INVALID');
  return checkTarget(raw, file);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);

/** Checks a parsed profile against the schema's rules; throws E_TARGET_INVALID listing every problem. */
export function checkTarget(raw: unknown, file = '<target>'): TargetProfile {
  const issues: string[] = [];
  if (!isObj(raw)) throw fail('E_TARGET_INVALID', `${file}: not a JSON object`, { file });
  if (raw.format !== TARGET_FORMAT) issues.push(`format: expected '${TARGET_FORMAT}'`);
  if (typeof raw.version !== 'number') issues.push('version: expected a number');
  else if (raw.version > TARGET_VERSION)
    throw fail('E_TARGET_VERSION', `${file}: target format v${raw.version} is newer than this nanomind (≤ v${TARGET_VERSION})`, { file, hint: 'upgrade nanomind' });
  for (const k of ['name', 'title', 'soc'] as const) if (typeof raw[k] !== 'string' || !raw[k]) issues.push(`${k}: expected a non-empty string`);
  if (typeof raw.name === 'string' && dirname(resolve(file)) === TARGETS_DIR && basename(file, '.json') !== raw.name) issues.push(`name: '${raw.name}' differs from the file name`);
  const sources = isObj(raw.sources) ? raw.sources : (issues.push('sources: expected an object'), {});
  for (const [id, s] of Object.entries(sources)) {
    if (!isObj(s)) { issues.push(`sources.${id}: expected an object`); continue; }
    if (!SOURCE_KINDS.includes(s.kind as SourceKind)) issues.push(`sources.${id}.kind: expected one of ${SOURCE_KINDS.join(', ')}`);
    if (typeof s.title !== 'string' || !s.title) issues.push(`sources.${id}.title: expected a non-empty string`);
  }
  const quantity = (v: unknown, at: string, required = true) => {
    if (v === undefined) { if (required) issues.push(`${at}: missing`); return; }
    if (!isObj(v)) { issues.push(`${at}: expected {value, unit?, source, note?}${typeof v === 'number' ? ' (a number needs its source)' : ''}`); return; }
    for (const k of Object.keys(v)) if (!['value', 'unit', 'source', 'note'].includes(k)) issues.push(`${at}.${k}: unknown field`);
    if (!(v.value === null || (typeof v.value === 'number' && Number.isFinite(v.value)))) issues.push(`${at}.value: expected a number or null`);
    if (typeof v.source !== 'string' || !Object.hasOwn(sources, v.source)) issues.push(`${at}.source: expected a key of sources, got ${JSON.stringify(v.source)}`);
    else if (v.value === null && (sources[v.source] as Obj)?.kind !== 'unmeasured' && typeof v.note !== 'string') issues.push(`${at}: a null value needs source kind 'unmeasured' or a note`);
    else if (v.value !== null && (sources[v.source] as Obj)?.kind === 'unmeasured') issues.push(`${at}: has a value but its source says it was not measured`);
  };
  const group = (key: string, fields: readonly string[], optional: readonly string[] = []) => {
    const g = raw[key];
    if (!isObj(g)) { issues.push(`${key}: expected an object`); return; }
    for (const f of fields) quantity(g[f], `${key}.${f}`);
    for (const f of optional) quantity(g[f], `${key}.${f}`, false);
    for (const f of Object.keys(g)) if (!fields.includes(f) && !optional.includes(f)) issues.push(`${key}.${f}: unknown field`);
  };
  group('memory', ['totalBytes', 'peakGBps', 'sustainedGBps']);
  group('storage', ['readMBps']);
  group('power', ['idleW', 'cameraW', 'microphoneW']);
  group('battery', ['capacityMah', 'voltage', 'converterEfficiency']);
  group('powerPolicy', ['highPercent', 'lowPercent']);
  if (raw.runtime !== undefined) {
    group('runtime', ['tokenLoopMs', 'imagePreprocessMs', 'imagePreprocessMsPerMpx'], ['prefillLoopMs']);
  }
  const accs = Array.isArray(raw.accelerators) ? raw.accelerators : (issues.push('accelerators: expected an array'), []);
  if (Array.isArray(raw.accelerators) && !accs.length) issues.push('accelerators: expected at least one');
  const ids = new Set<string>();
  accs.forEach((a, i) => checkAccelerator(a, `accelerators[${i}]`, ids, issues, quantity, sources));
  for (const k of Object.keys(raw))
    if (!['$schema', 'format', 'version', 'name', 'title', 'default', 'soc', 'sources', 'memory', 'storage', 'accelerators', 'power', 'battery', 'powerPolicy', 'runtime'].includes(k))
      issues.push(`${k}: unknown field${typeof raw[k] === 'number' ? ' (a number needs its source)' : ''}`);
  if (issues.length) throw fail('E_TARGET_INVALID', `${file}: ${issues.length} problem(s): ${issues[0]}`, { file, notes: issues });
  return deepFreeze(raw as unknown as TargetProfile);
}

const ACC_FIELDS = ['id', 'kind', 'title', 'backend', 'cores', 'peakGops', 'computeEfficiency', 'memoryEfficiency', 'launchOverheadMs', 'nodeOverheadMs', 'tensorOverheadMs', 'nodeElementNs', 'activePowerW',
  'formats', 'llm', 'staticShapes', 'maxOpset', 'unsupportedOps', 'memoryDomainBytes', 'coreMask', 'cpuList'];

function checkAccelerator(a: unknown, at: string, ids: Set<string>, issues: string[], quantity: (v: unknown, at: string, required?: boolean) => void, sources: Obj): void {
  if (!isObj(a)) { issues.push(`${at}: expected an object`); return; }
  if (typeof a.id !== 'string' || !/^[a-z0-9][a-z0-9-]*$/.test(a.id)) issues.push(`${at}.id: expected a lower-case id`);
  else if (ids.has(a.id)) issues.push(`${at}.id: duplicate '${a.id}'`);
  else ids.add(a.id);
  if (!ACCELERATOR_KINDS.includes(a.kind as AcceleratorKind)) issues.push(`${at}.kind: expected one of ${ACCELERATOR_KINDS.join(', ')}`);
  if (!BACKENDS.includes(a.backend as BackendName)) issues.push(`${at}.backend: expected one of ${BACKENDS.join(', ')}`);
  if (typeof a.title !== 'string') issues.push(`${at}.title: expected a string`);
  if (typeof a.staticShapes !== 'boolean') issues.push(`${at}.staticShapes: expected a boolean`);
  for (const f of ['cores', 'computeEfficiency', 'memoryEfficiency', 'launchOverheadMs', 'activePowerW']) quantity(a[f], `${at}.${f}`);
  for (const f of ['maxOpset', 'memoryDomainBytes', 'nodeOverheadMs', 'tensorOverheadMs', 'nodeElementNs']) quantity(a[f], `${at}.${f}`, false);
  if (!isObj(a.peakGops) || !Object.keys(a.peakGops).length) issues.push(`${at}.peakGops: expected {fp32|fp16|int8: quantity}`);
  else for (const [k, q] of Object.entries(a.peakGops)) {
    if (!COMPUTE_DTYPES.includes(k as ComputeDtype)) issues.push(`${at}.peakGops.${k}: expected one of ${COMPUTE_DTYPES.join(', ')}`);
    quantity(q, `${at}.peakGops.${k}`);
  }
  const formats = (v: unknown, where: string) => {
    if (!Array.isArray(v)) { issues.push(`${where}: expected an array of formats`); return; }
    v.forEach((f, j) => { if (!WEIGHT_FORMATS.includes(f as WeightFormat)) issues.push(`${where}[${j}]: unknown format ${JSON.stringify(f)} (expected one of ${WEIGHT_FORMATS.join(', ')})`); });
  };
  formats(a.formats, `${at}.formats`);
  if (a.llm !== undefined) {
    if (!isObj(a.llm)) issues.push(`${at}.llm: expected {runtime, formats, source}`);
    else {
      if (a.llm.runtime !== 'rkllm') issues.push(`${at}.llm.runtime: expected 'rkllm'`);
      formats(a.llm.formats, `${at}.llm.formats`);
      if (typeof a.llm.source !== 'string' || !Object.hasOwn(sources, a.llm.source)) issues.push(`${at}.llm.source: expected a key of sources`);
    }
  }
  if (a.unsupportedOps !== undefined && !(Array.isArray(a.unsupportedOps) && a.unsupportedOps.every((o) => typeof o === 'string'))) issues.push(`${at}.unsupportedOps: expected an array of op names`);
  for (const f of ['coreMask', 'cpuList']) if (a[f] !== undefined && typeof a[f] !== 'string') issues.push(`${at}.${f}: expected a string`);
  for (const k of Object.keys(a)) if (!ACC_FIELDS.includes(k)) issues.push(`${at}.${k}: unknown field${typeof a[k] === 'number' ? ' (a number needs its source)' : ''}`);
}
