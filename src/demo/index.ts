/**
 * `demo`: the built-in end-to-end run. Until the trained embedded model lands, it generates the tiny
 * random-weight LLaVA-style and Whisper-style models (onnx-community layout + monolithic graphs) and
 * takes them through the stages that exist: partition with ONNX Runtime verification.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildTinyAudioLlm, buildTinyAudioLlmMonolithic, buildTinyLlava, buildTinyLlavaMonolithic } from '../fixtures/index.js';
import type { BricksManifest } from '../formats/bricks.js';
import { partition } from '../partition/index.js';

export interface DemoCase {
  readonly name: string;
  readonly input: string;
  readonly out: string;
  readonly ms: number;
  readonly manifest: BricksManifest;
}

export interface DemoResult {
  readonly dir: string;
  readonly kept: boolean;
  readonly cases: readonly DemoCase[];
  readonly totalMs: number;
}

export async function runDemo(o: { out?: string; onStage?: (s: string) => void } = {}): Promise<DemoResult> {
  const started = performance.now();
  const dir = o.out ? resolve(o.out) : await mkdtemp(join(tmpdir(), 'nanomind-demo-'));
  try {
    o.onStage?.('generate models');
    const llava = join(dir, 'models', 'tiny-llava');
    const audio = join(dir, 'models', 'tiny-audio-llm');
    await buildTinyLlava(llava);
    await buildTinyLlavaMonolithic(join(llava, 'model.onnx'));
    await buildTinyAudioLlm(audio);
    await buildTinyAudioLlmMonolithic(join(audio, 'model.onnx'));
    const plan: { name: string; input: string; splitProjector?: boolean }[] = [
      { name: 'llava monolithic → bricks', input: join(llava, 'model.onnx'), splitProjector: true },
      { name: 'llava split folder → bricks', input: llava },
      { name: 'audio-LLM monolithic → bricks', input: join(audio, 'model.onnx') },
    ];
    const cases: DemoCase[] = [];
    for (const [i, p] of plan.entries()) {
      o.onStage?.(p.name);
      const t0 = performance.now();
      const out = join(dir, 'bricks', ['llava-mono', 'llava-split', 'audio-mono'][i]);
      const r = await partition({ input: p.input, out, splitProjector: p.splitProjector });
      cases.push({ name: p.name, input: p.input, out, ms: performance.now() - t0, manifest: r.manifest });
    }
    return { dir, kept: !!o.out, cases, totalMs: performance.now() - started };
  } finally {
    if (!o.out) await rm(dir, { recursive: true, force: true });
  }
}
