/**
 * Calibration inputs, held-out inputs and greedy tokens of an encoder-decoder brick set (Whisper;
 * Florence-2), taken from the runtime itself rather than from a second seq2seq loop: every WAV (Whisper)
 * or image (Florence-2, task '<CAPTION>') of `--calib DIR` goes through `runPrompt` → transcribe /
 * caption → generateSeq2Seq, with the brick set's `run` observed. Every run of a brick is one sample of
 * it: the audio encoder its processor's input_features; the vision brick its pixel_values; the embed
 * brick the task prompt's ids, then each decoder step's ids; the BART encoder the image rows + prompt
 * embeddings and their mask; the decoder every step: the first (the whole prefix over the real encoder
 * output, empty past, use_cache_branch false, the branch that projects the cross-attention K/V) and the
 * cached ones (one token, the real past, use_cache_branch true). The tokens of the same runs are the
 * end-to-end figures' float side; the quantized set is run the same way.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import '../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import ort from 'onnxruntime-node';
import { fail } from '../errors.js';
import type { BricksManifest } from '../formats/bricks.js';
import type { Feeds as RunFeeds } from '../run/backend.js';
import type { BrickSet } from '../run/brick-set.js';
import { openModel, type RuntimeModel, type Turn } from '../run/model.js';
import { runPrompt } from '../run/run.js';
import type { Feeds, Sample } from './samples.js';

/** Florence-2's task for calibration and the end-to-end figures (its captioning prompt). */
export const SEQ2SEQ_IMAGE_TASK = '<CAPTION>';

const IMAGE_EXT = /\.(png|jpe?g|webp|gif|tiff?)$/i;

/** Cross-attention connections mark an encoder-decoder set. */
export const isSeq2SeqSet = (m: BricksManifest): boolean => m.connections.some((c) => c.cross);

/** A prepend merge (image rows in front of the prompt) marks Florence-2; otherwise the encoder hears audio. */
export const seq2seqMediaKind = (m: BricksManifest): 'image' | 'audio' =>
  m.connections.some((c) => c.merge?.mode === 'prepend') ? 'image' : 'audio';

/** The WAVs or images of a calibration folder, sorted by name. */
export async function seq2seqMediaFiles(m: BricksManifest, dir: string): Promise<string[]> {
  const kind = seq2seqMediaKind(m);
  const names = (await readdir(dir).catch(() => { throw fail('E_QUANT_CALIB', `${dir}: cannot read the calibration directory`); })).sort();
  const files = names.filter((n) => (kind === 'image' ? IMAGE_EXT.test(n) : /\.wav$/i.test(n))).map((n) => join(dir, n));
  if (!files.length)
    throw fail('E_QUANT_CALIB', `${dir}: no ${kind === 'image' ? 'images' : 'WAV clips'} for the encoder-decoder model`,
      { hint: `put the ${kind === 'image' ? 'images (.png, .jpg)' : '.wav clips'} the model will see in the folder; the model's own processor prepares them` });
  return files;
}

/** A copy of a runtime tensor as an ort.Tensor (the runtime may reuse its buffers after the call). */
function ortCopy(f: RunFeeds): Feeds {
  return Object.fromEntries(Object.entries(f).map(([k, t]) => {
    const data = t.data as Float32Array;
    return [k, new ort.Tensor(t.type as 'float32', data.slice(), [...t.dims])];
  }));
}

export interface Seq2SeqRuns {
  /** Generated tokens per file (greedy), then -1 when an eos ended them. */
  readonly tokens: number[][];
  /** Per file: sample k holds the k-th run's feeds of every brick that ran k times or more (when `record` was asked). */
  readonly samples: Sample[][];
}

/** Runs each file through the runtime's own encoder-decoder generation on `dir` (greedy). */
export async function runSeq2Seq(dir: string, m: BricksManifest, files: readonly string[], o: { maxNewTokens: number; record?: boolean }): Promise<Seq2SeqRuns> {
  const model = await openModel(dir);
  try {
    if (!model.set.seq2seq) throw fail('E_QUANT_INPUT', `${dir}: the runtime finds no encoder-decoder roles in this brick set`);
    let seen: Map<string, Feeds[]> | undefined;
    const inner = model.set;
    const run: BrickSet['run'] = async (name, feeds, opts) => {
      if (seen) seen.set(name, [...(seen.get(name) ?? []), ortCopy(feeds)]);
      return inner.run(name, feeds, opts);
    };
    const set = new Proxy(inner, { get: (t, p) => (p === 'run' ? run : Reflect.get(t, p, t)) });
    const observed = new Proxy(model, { get: (t, p) => (p === 'set' ? set : Reflect.get(t, p, t)) }) as RuntimeModel;
    const kind = seq2seqMediaKind(m);
    const tokens: number[][] = [], samples: Sample[][] = [];
    for (const file of files) {
      seen = o.record ? new Map() : undefined;
      const turn: Turn = kind === 'image' ? { images: [{ file }], prompt: SEQ2SEQ_IMAGE_TASK } : { audio: [{ file }] };
      const r = await runPrompt(observed, turn, { maxNewTokens: o.maxNewTokens, sampling: { temperature: 0 } });
      // -1 marks the eos that ended the answer, so an early stop on one side counts as a disagreement
      tokens.push([...r.tokens, ...(r.stopReason === 'eos' ? [-1] : [])]);
      if (seen) {
        const runs = [...seen];
        const n = Math.max(...runs.map(([, f]) => f.length));
        samples.push(Array.from({ length: n }, (_, k) => ({ feeds: new Map(runs.filter(([, f]) => f[k]).map(([b, f]) => [b, f[k]!])) })));
      }
    }
    return { tokens, samples };
  } finally {
    await model.close();
  }
}
