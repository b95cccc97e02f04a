/**
 * Florence-2 as the hub exports it (vision_encoder + embed_tokens + encoder_model + decoder_model_merged)
 * through nanomind's own path — partition (adopt) → openModel → Florence2Processor's task prompt →
 * vision → image features prepended to the prompt embeddings → encoder once → merged decoder with the
 * cross-attention K/V kept from step one, greedy with the generation_config rules (forced <s> first,
 * no_repeat_ngram_size 3, forced </s> at the length limit) — against transformers.js on the same files
 * and the same PNG: the same prompt ids and the same greedy tokens, for every variant.
 * Oracle: transformers.js 4.3.1 (AutoProcessor + Florence2ForConditionalGeneration with the folder's own
 * generation_config — its num_beams 3 keeps the best token of each step in transformers.js 4.3.1, i.e.
 * greedy — and its NoRepeatNGramLogitsProcessor for the n-gram rule on its own).
 *
 * The images are 32×32, the processor's size, so neither side resizes (nanomind resamples like Pillow,
 * transformers.js like libvips). The fixture's outputs repeat without the n-gram rule (checked by hand:
 * with no_repeat_ngram_size 0 both images give other tokens), so the rule is exercised end to end.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { copyFile, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AutoProcessor, Florence2ForConditionalGeneration, NoRepeatNGramLogitsProcessor, RawImage, Tensor } from '@huggingface/transformers';
import { writePatternPng } from '../../src/fixtures/images.js';
import { buildTinyFlorence2, FLORENCE2_TOKENS } from '../../src/fixtures/florence2.js';
import { ALL_VARIANTS, DTYPE_VARIANTS } from '../../src/fixtures/variants.js';
import { mulberry32 } from '../../src/fixtures/blocks.js';
import { partition } from '../../src/partition/index.js';
import { inspectModel } from '../../src/partition/inspect.js';
import { openModel } from '../../src/run/model.js';
import { caption } from '../../src/run/caption.js';
import { bannedNgramTokens } from '../../src/run/generation/seq2seq.js';
import { readBricksManifest, type BricksManifest } from '../../src/formats/bricks.js';
import { compile } from '../../src/compile/index.js';
import { quantizeBricks } from '../../src/quantize/index.js';
import { cli } from '../cli-helper.js';
import { transformersJsRoot } from './helpers.js';

const NEW_TOKENS = 24;
const code = (p: Promise<unknown>): Promise<string | undefined> => p.then(() => undefined, (e: { code?: string }) => e.code);
const EOS = FLORENCE2_TOKENS['</s>'];
const tjsRoot = transformersJsRoot('nanomind-florence2-');
let root: string;
let dir: string;
const images: string[] = [];
beforeAll(async () => {
  root = tjsRoot.dir();
  dir = join(root, 'florence2');
  await buildTinyFlorence2(dir);
  for (const seed of [0, 1]) images.push(await writePatternPng(join(root, `img${seed}.png`), 32, 32, seed));
}, 60_000);

type Gen = { generate: (o: Record<string, unknown>) => Promise<{ data: BigInt64Array }>; dispose: () => Promise<void> };

async function transformersJs(file: string, task: string, dtype: string, maxNew = NEW_TOKENS) {
  const processor = await AutoProcessor.from_pretrained('florence2', { local_files_only: true });
  const model = await Florence2ForConditionalGeneration.from_pretrained('florence2', { dtype: dtype as never, local_files_only: true }) as unknown as Gen;
  try {
    const inputs = await processor(await RawImage.read(file), task) as Record<string, { data: ArrayLike<number | bigint> }>;
    const out = await model.generate({ ...inputs, max_new_tokens: maxNew });
    // The decoder start token first, then the generated tokens (the ending </s> included).
    return { prompt: Array.from(inputs.input_ids!.data, Number), tokens: Array.from(out.data, Number).slice(1) };
  } finally {
    await model.dispose();
  }
}

async function nanomind(bricks: string, file: string, task: string, maxNew = NEW_TOKENS) {
  const m = await openModel(bricks);
  try {
    const r = await caption(m, { prompt: task, images: [{ file }] }, { maxNewTokens: maxNew });
    return { prompt: [...r.promptIds], tokens: [...r.tokens, ...(r.stopReason === 'eos' ? [EOS] : [])], text: r.text, stopReason: r.stopReason };
  } finally {
    await m.close();
  }
}

/** transformers.js dtype → file suffix ('' = fp32). */
const VARIANTS: readonly (readonly [string, string])[] = [['fp32', ''], ...ALL_VARIANTS.map((v) => [DTYPE_VARIANTS[v].dtype, DTYPE_VARIANTS[v].suffix.slice(1)] as const)];
const partitioned = new Map<string, Promise<string>>();
/** The variant's brick set, partitioned once. */
function bricksFor(dtype: string): Promise<string> {
  let p = partitioned.get(dtype);
  if (!p) {
    const out = join(root, `bricks-${dtype}`);
    p = partition({ input: dir, out, dtype: VARIANTS.find(([d]) => d === dtype)![1] || undefined }).then(() => out);
    partitioned.set(dtype, p);
  }
  return p;
}

describe('florence2: partition', () => {
  it('adopts the four files as vision, embed, encoder and decoder bricks; inspect names the same bricks', async () => {
    const out = await bricksFor('fp32');
    const m = JSON.parse(await readFile(join(out, 'bricks.json'), 'utf8')) as BricksManifest;
    expect(m.bricks.map((b) => [b.name, b.kind])).toEqual([['vision', 'vision'], ['embed', 'embed'], ['encoder', 'encoder'], ['decoder', 'decoder']]);
    expect(m.connections).toEqual([
      { from: 'vision.image_features', to: 'encoder.inputs_embeds', merge: { mode: 'prepend' } },
      { from: 'embed.inputs_embeds', to: 'encoder.inputs_embeds' },
      { from: 'encoder.last_hidden_state', to: 'decoder.encoder_hidden_states', cross: { mode: 'cross-attention' } },
      { from: 'embed.inputs_embeds', to: 'decoder.inputs_embeds' },
    ]);
    expect(m.files.map((f) => f.path)).toEqual(expect.arrayContaining(['preprocessor_config.json', 'generation_config.json', 'tokenizer.json']));
    const r = await inspectModel(dir);
    expect(r.bricks.map((b) => [b.name, b.kind])).toEqual(m.bricks.map((b) => [b.name, b.kind]));
    // The other variants are named, not dropped silently.
    expect(r.notes.join('\n')).toContain('not used: decoder_model_merged_bnb4.onnx');
    expect((await inspectModel(dir, { dtype: 'fp16' })).files.map((f) => f.file)).toEqual(
      ['vision_encoder', 'embed_tokens', 'encoder_model', 'decoder_model_merged'].map((s) => `onnx/${s}_fp16.onnx`));
  });

  it('bricks.json: a merge mode nanomind does not know, or a replace-rows merge without its token id, is rejected', async () => {
    const out = await bricksFor('fp32');
    const copy = join(root, 'bricks-bad-merge');
    await cp(out, copy, { recursive: true });
    const file = join(copy, 'bricks.json');
    const j = JSON.parse(await readFile(file, 'utf8')) as { connections: { merge?: Record<string, unknown> }[] };
    for (const merge of [{ mode: 'append' }, { mode: 'replace-rows' }]) {
      j.connections[0]!.merge = merge;
      await writeFile(file, JSON.stringify(j));
      expect(await code(readBricksManifest(copy))).toBe('E_BRICKS_INVALID');
    }
  });

  it('refuses a vision encoder without its token embedding (partition and inspect alike)', async () => {
    const part = join(root, 'florence2-no-embed');
    await mkdir(join(part, 'onnx'), { recursive: true });
    for (const f of ['vision_encoder.onnx', 'encoder_model.onnx', 'decoder_model_merged.onnx']) await copyFile(join(dir, 'onnx', f), join(part, 'onnx', f));
    await copyFile(join(dir, 'config.json'), join(part, 'config.json'));
    expect(await code(partition({ input: part, out: join(root, 'no-embed-bricks') }))).toBe('E_PARTITION_ENCODER_DECODER');
    expect(await code(inspectModel(part))).toBe('E_PARTITION_ENCODER_DECODER');
  });
});

describe('florence2: same prompt ids and greedy tokens as transformers.js', () => {
  it.each(VARIANTS.map(([d]) => d))('%s variant, <CAPTION>', async (dtype) => {
    const bricks = await bricksFor(dtype);
    // Every variant on one image, fp32 on both.
    for (const file of dtype === 'fp32' ? images : images.slice(0, 1)) {
      const ref = await transformersJs(file, '<CAPTION>', dtype);
      const got = await nanomind(bricks, file, '<CAPTION>');
      expect(got.prompt).toEqual(ref.prompt);
      expect(got.tokens).toEqual(ref.tokens);
      // forced_bos_token_id: <s> first; then a varied answer that ends on its own </s> before the limit.
      expect(ref.tokens[0]).toBe(FLORENCE2_TOKENS['<s>']);
      expect(new Set(ref.tokens).size).toBeGreaterThan(4);
      expect(got.stopReason).toBe('eos');
      expect(ref.tokens.length).toBeLessThan(NEW_TOKENS);
    }
  });

  it('a task with input (task_prompts_with_input) and a short limit: forced </s> as the last token', async () => {
    const bricks = await bricksFor('fp32');
    const task = '<CAPTION_TO_PHRASE_GROUNDING>a red cat';
    const ref = await transformersJs(images[1]!, task, 'fp32', 6);
    const got = await nanomind(bricks, images[1]!, task, 6);
    expect(got.prompt).toEqual(ref.prompt);
    expect(got.tokens).toEqual(ref.tokens);
    expect(ref.tokens).toHaveLength(6);
    expect(ref.tokens.at(-1)).toBe(EOS);
    // Free text is its own prompt.
    const free = 'a picture of';
    expect((await nanomind(bricks, images[0]!, free, 4)).prompt).toEqual((await transformersJs(images[0]!, free, 'fp32', 4)).prompt);
  });

  it('no_repeat_ngram_size bans what transformers.js NoRepeatNGramLogitsProcessor bans', () => {
    const rand = mulberry32(7);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(rand() * 4);
      const ids = Array.from({ length: Math.floor(rand() * 14) }, () => Math.floor(rand() * 4));
      const p = new NoRepeatNGramLogitsProcessor(n);
      const logits = new Tensor('float32', new Float32Array(8), [1, 8]);
      p._call([ids.map(BigInt)], logits as never);
      const banned = [...(logits.data as Float32Array)].flatMap((v, i) => (v === -Infinity ? [i] : []));
      expect([...new Set(bannedNgramTokens(ids, n))].sort(), `n=${n} ids=${ids}`).toEqual(banned);
    }
  });
});

describe('florence2: compile and quantize', () => {
  it('compiles into a bundle that captions the same; quantize without real calibration inputs refuses with one code (test/quantize/seq2seq.test.ts quantizes it)', async () => {
    const bricks = await bricksFor('fp32');
    const out = join(root, 'bundle');
    await compile({ bricks, target: 'rk3588', out, rknn: 'skip' });
    const bundled = await nanomind(out, images[0]!, '<CAPTION>');
    expect(bundled.tokens).toEqual((await nanomind(bricks, images[0]!, '<CAPTION>')).tokens);
    expect(await code(quantizeBricks({ dir: bricks, out: join(root, 'q') }))).toBe('E_QUANT_CALIB');
  });
});

describe('florence2: CLI', () => {
  it('run --image --prompt <CAPTION> prints the generated text; no task, or chat: usage errors', async () => {
    const bricks = await bricksFor('fp32');
    const lib = await nanomind(bricks, images[0]!, '<CAPTION>', 256);
    expect(lib.text.length).toBeGreaterThan(0);
    const plain = await cli('run', bricks, '--image', images[0]!, '--prompt', '<CAPTION>');
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout.trim()).toBe(lib.text);
    const m = await openModel(bricks);
    try {
      expect(await code(caption(m, { prompt: '', images: [{ file: images[0]! }] }))).toBe('E_USAGE');
      expect(await code(caption(m, { prompt: '<CAPTION>', images: [] }))).toBe('E_USAGE');
    } finally { await m.close(); }
    const chat = await cli('chat', bricks, '--json');
    expect(chat.code).toBe(2);
    expect(JSON.parse(chat.stdout || chat.stderr).error.code).toBe('E_USAGE');
  });
});
