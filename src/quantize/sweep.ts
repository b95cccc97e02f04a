/**
 * `--sweep`: accuracy vs size over a grid of per-brick precisions (the paper's Fig. 13). Every
 * (brick, format) pair is quantized once into a scratch folder and compared with its float brick;
 * every combination is then a manifest over those files, scored end to end by greedy agreement with the
 * float set (and exact match when an eval set is given). Entries are sorted by bytes, Pareto front marked.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fail } from '../errors.js';
import { writeBricksManifest, type BricksManifest } from '../formats/bricks.js';
import type { BrickKind } from '../formats/names.js';
import { describeBrick } from '../partition/brick-files.js';
import { brickDiskBytes, quantizeBrick, type BrickJob } from './brick.js';
import { parseFormat } from './format-spec.js';
import { endToEnd, type EvalItem, type GreedyGenerator, type Prompt } from './greedy.js';
import { compareBrick, primaryOutput } from './metrics.js';
import { markPareto, type SweepEntry } from './report.js';
import type { Feeds } from './samples.js';

export type SweepGrid = Partial<Record<BrickKind | string, readonly string[]>>;

export const DEFAULT_GRID: Readonly<Record<BrickKind, readonly string[]>> = {
  vision: ['fp32', 'fp16', 'w8a8'],
  projector: ['fp32', 'fp16', 'w8a8'],
  audio: ['fp32', 'fp16', 'w8a8'],
  embed: ['fp32', 'w8a16-g32', 'w4a16-g32'],
  decoder: ['fp32', 'fp16', 'w8a16-g32', 'w4a16-g128', 'w4a16-g32'],
  encoder: ['fp32', 'fp16', 'w8a16-g32', 'w4a16-g32'],
};

export interface SweepOptions {
  readonly dir: string;
  readonly manifest: BricksManifest;
  readonly scratch: string;
  readonly grid?: SweepGrid;
  readonly calib: (brick: string) => Feeds[];
  readonly held: (brick: string) => Feeds[];
  readonly prompts: readonly Prompt[];
  readonly newTokens: number;
  readonly evalSet?: readonly EvalItem[];
  readonly job: Pick<BrickJob, 'algorithm' | 'symmetric' | 'accuracyLevel' | 'calibMethod' | 'threads'>;
  readonly floatTokens?: { prompts: number[][]; eval?: number[][] };
  readonly generate: GreedyGenerator;
  readonly onStage?: (s: string) => void;
}

/** Every grid key must name a brick or a brick kind of the set. */
export function checkGrid(m: BricksManifest, grid: SweepGrid | undefined): void {
  for (const key of Object.keys(grid ?? {}))
    if (!m.bricks.some((b) => b.name === key || b.kind === key))
      throw fail('E_USAGE', `--sweep ${key}=…: no brick or brick kind '${key}' (bricks: ${m.bricks.map((b) => b.name).join(', ')})`);
}

export async function runSweep(o: SweepOptions): Promise<SweepEntry[]> {
  const m = o.manifest;
  checkGrid(m, o.grid);
  const grid = (name: string, kind: BrickKind) => (o.grid?.[name] ?? o.grid?.[kind] ?? DEFAULT_GRID[kind]).map((f) => parseFormat(f).name);
  // 1. Each (brick, format) once.
  const variants = new Map<string, { entry: BricksManifest['bricks'][number]; bytes: number; cosine: number | null }>();
  for (const b of m.bricks)
    for (const f of new Set(grid(b.name, b.kind))) {
      o.onStage?.(`sweep: ${b.name} → ${f}`);
      const sub = join(o.scratch, `${b.name}__${f}`);
      await mkdir(sub, { recursive: true });
      const r = await quantizeBrick({ ...o.job, srcDir: o.dir, brick: b, format: parseFormat(f), outDir: sub, calib: o.calib(b.name), scratch: join(o.scratch, '.calib') });
      const e = await describeBrick(sub, r.file, b.name, b.kind);
      const rel = relative(o.scratch, sub);
      const entry = { ...e, file: join(rel, e.file), dataFiles: e.dataFiles.map((d) => join(rel, d)) };
      const cosine = f === 'fp32' ? 1 : (await compareBrick(join(o.dir, b.file), join(sub, r.file), primaryOutput(b), [o.held(b.name)], o.job.threads))[0].cosine;
      variants.set(`${b.name}|${f}`, { entry, bytes: await brickDiskBytes(o.scratch, entry), cosine });
    }
  // 2. Every combination, scored end to end (tokenizer/config files beside the variants, as in a brick set).
  for (const f of m.files) await copyFile(join(o.dir, f.path), join(o.scratch, f.path));
  let combos: Record<string, string>[] = [{}];
  for (const b of m.bricks) combos = combos.flatMap((c) => [...new Set(grid(b.name, b.kind))].map((f) => ({ ...c, [b.name]: f })));
  const canGenerate = m.bricks.some((b) => b.kind === 'decoder') && o.prompts.length > 0 && o.newTokens > 0;
  let floatTokens = o.floatTokens;
  const rows: Omit<SweepEntry, 'pareto'>[] = [];
  for (const [i, formats] of combos.entries()) {
    o.onStage?.(`sweep: configuration ${i + 1}/${combos.length}`);
    const chosen = m.bricks.map((b) => variants.get(`${b.name}|${formats[b.name]}`)!);
    const manifest: BricksManifest = { ...m, bricks: chosen.map((v) => v.entry) };
    let e2e: Awaited<ReturnType<typeof endToEnd>> | undefined;
    if (canGenerate) {
      // On disk too, so a generator that opens the directory itself (the runtime's) sees this configuration.
      await writeBricksManifest(o.scratch, manifest);
      e2e = await endToEnd({ float: { dir: o.dir, manifest: m }, quant: { dir: o.scratch, manifest }, prompts: o.prompts, evalSet: o.evalSet,
        newTokens: o.newTokens, generate: o.generate, floatTokens });
      floatTokens = e2e.floatTokens;
    }
    rows.push({
      formats, bytes: chosen.reduce((a, v) => a + v.bytes, 0),
      tokenAgreement: e2e?.tokenAgreement ?? null, prefixAgreement: e2e?.prefixAgreement ?? null, accuracy: e2e?.accuracy ?? null,
      cosine: Object.fromEntries(m.bricks.map((b, j) => [b.name, chosen[j].cosine])),
    });
  }
  return markPareto(rows).sort((a, b) => a.bytes - b.bytes);
}
