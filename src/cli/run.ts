import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { Command } from 'commander';
import { fail } from '../errors.js';
import type { MediaItem } from '../run/model.js';
import { collect, ENGINE_OPTION, parseEngine, parseNumber, samplingFlags } from './flags.js';
import { emit } from './output.js';
import { openRuntimeModel } from './open-model.js';

interface RunFlags {
  prompt?: string; system?: string; image: string[]; audio: string[]; images?: string[]; inputIds?: string; input: string[];
  maxTokens?: string; temperature?: string; topK?: string; topP?: string; repetitionPenalty?: string; seed?: string;
  stop: string[]; threads?: string; engine?: string; overlap: boolean; json?: boolean; language?: string; task?: string; powerSupply?: string;
}

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.bmp', '.tif', '.tiff']);
const repeat = (v: string, prev: string[]) => [...prev, v];

export const runVerb = (program: Command) => program
  .command('run <model>')
  .description('generate an answer with the included runtime (brick set or compiled bundle) on this machine')
  .option('-p, --prompt <text>', "the question (Florence-2: the task, e.g. '<CAPTION>')", '')
  .option('--system <text>', 'system message')
  .option('--image <file>', 'an image for the prompt (repeatable)', repeat, [])
  .option('--audio <file>', 'a WAV file for the prompt (repeatable)', repeat, [])
  .option('--images <files...>', 'a stream of images (or a folder), one answer each; encoding overlaps decoding')
  .option('--language <code>', "speech-to-text (Whisper): the spoken language, e.g. en, de (default: en for multilingual models)")
  .option('--task <task>', 'speech-to-text (Whisper): transcribe | translate (default: transcribe)')
  .option('--input-ids <list>', 'token ids, comma separated: bypasses the tokenizer and chat template')
  .option('--input <name=file.npy>', 'a tensor for a brick input, e.g. pixel_values=x.npy (repeatable)', repeat, [])
  .option('--max-tokens <n>', 'new tokens at most', '256')
  .option('--temperature <t>', "0 = greedy (default: the model's generation_config, greedy if none)")
  .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
  .option('--top-p <p>', 'nucleus sampling threshold (1 = off)')
  .option('--repetition-penalty <r>', 'HF repetition penalty (1 = off)')
  .option('--seed <s>', 'sampling seed (reproducible runs)')
  .option('--stop <text>', 'stop when the answer contains this text (repeatable)', collect, [])
  .option('--threads <n>', 'CPU threads per brick (default: ONNX Runtime decides)')
  .option(...ENGINE_OPTION)
  .option('--no-overlap', 'with --images: encode and answer one image at a time (for comparison)')
  .option('--power-supply <dir>', 'with --images: where the battery is read (default /sys/class/power_supply; a test folder laid out the same)')
  .option('--json', 'print {text, tokens, stats} as JSON instead of streaming')
  .action(async (model: string, f: RunFlags) => {
    const { readInputTensors } = await import('../run/model.js');
    const { runPrompt, runImageStream } = await import('../run/run.js');
    const { decoderThreadsBesideWorker } = await import('../run/workers/encoder-client.js');
    const threads = parseNumber('--threads', f.threads, { min: 1, integer: true });
    const sampling = samplingFlags(f);
    const maxNewTokens = parseNumber('--max-tokens', f.maxTokens, { min: 1, integer: true });
    // An overlapped image stream runs the encoder worker beside the decoder: unless told otherwise, give
    // the decoder the cores the worker leaves (ORT's default would take them all and oversubscribe).
    const streamThreads = f.images && f.overlap && threads === undefined ? decoderThreadsBesideWorker() : threads;
    const opened = await openRuntimeModel(model, { threads: streamThreads, engine: parseEngine(f.engine) });
    const m = opened.model;
    try {
      const onText = f.json ? undefined : (t: string) => { process.stdout.write(t); };
      if (f.images) {
        const files = await expandImages(f.images);
        const { powerMonitor, thresholdsFrom, transitionLine } = await import('../run/power/policy.js');
        // Thresholds from the bundle's plan.json (compile's defaults for a bare brick set); one stderr line per transition.
        const power = powerMonitor({ dir: f.powerSupply, thresholds: thresholdsFrom(m.bundle?.plan.powerPolicy),
          onTransition: (t) => process.stderr.write(`${transitionLine(t)}\n`) });
        const r = await runImageStream(m, files, f.prompt ?? '', { maxNewTokens, sampling, stopStrings: f.stop, overlap: f.overlap, power,
          onAnswer: f.json ? undefined : (i, a) => process.stdout.write(`${files[i]}: ${a.text}\n`) });
        if (f.json) emit(r, true, () => '');
        else process.stderr.write(`${files.length} images in ${(r.totalMs / 1000).toFixed(2)} s (${r.imagesPerS.toFixed(2)} images/s, ${r.overlap ? 'encoder ∥ decoder' : 'sequential'}; ${r.handoff.copiesPerRequest} copies, ${(r.handoff.bytesCopiedPerRequest / 1e6).toFixed(2)} MB per image)\n`);
        return;
      }
      const tensors = await readInputTensors(Object.fromEntries(f.input.map(splitInput)));
      const media = { image: [] as MediaItem[], audio: [] as MediaItem[] };
      for (const [name, t] of Object.entries(tensors)) {
        const s2s = m.set.seq2seq;
        const enc = m.set.encoders.find((e) => e.input.name === name) ?? (s2s?.vision?.visionInput.name === name ? { kind: 'vision' }
          : s2s && !s2s.vision && s2s.encoderInput.name === name ? { kind: s2s.encoder.kind } : undefined);
        if (!enc) throw fail('E_USAGE', `--input ${name}: no encoder brick takes '${name}'`, { notes: m.set.encoders.map((e) => `${e.kind}: ${e.input.name}`) });
        media[enc.kind === 'vision' ? 'image' : 'audio'].push({ tensor: t });
      }
      const result = await runPrompt(m, {
        prompt: f.prompt, system: f.system,
        images: [...f.image.map((file) => ({ file })), ...media.image], audio: [...f.audio.map((file) => ({ file })), ...media.audio],
        inputIds: f.inputIds === undefined ? undefined : parseIds(f.inputIds),
      }, { maxNewTokens, sampling, stopStrings: f.stop, onText, language: f.language, task: f.task });
      if (f.json) emit(result, true, () => '');
      else process.stdout.write('\n');
    } finally {
      await opened.close();
    }
  });

function splitInput(item: string): [string, string] {
  const eq = item.indexOf('=');
  if (eq <= 0 || eq === item.length - 1) throw fail('E_USAGE', `--input '${item}': expected NAME=FILE.npy`);
  return [item.slice(0, eq), item.slice(eq + 1)];
}

function parseIds(list: string): number[] {
  const ids = list.split(/[\s,]+/).filter(Boolean).map(Number);
  if (!ids.length || ids.some((n) => !Number.isSafeInteger(n) || n < 0)) throw fail('E_USAGE', `--input-ids '${list}': expected non-negative integers separated by commas`);
  return ids;
}

async function expandImages(items: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const item of items) {
    const st = await stat(item).catch(() => undefined);
    if (!st) throw fail('E_IMAGE', `${item}: no such file or directory`, { file: item });
    if (st.isDirectory()) out.push(...(await readdir(item)).filter((n) => IMAGE_EXT.has(extname(n).toLowerCase())).sort().map((n) => join(item, n)));
    else out.push(item);
  }
  if (!out.length) throw fail('E_IMAGE', `--images ${items.join(' ')}: no images found`);
  return out;
}
