#!/usr/bin/env node
/**
 * The family × dtype table of the README: for each model family nanomind knows, a seeded tiny fixture in
 * the hub's layout (src/fixtures/*) and every dtype variant the hub ships, run through
 *   partition (adopt) → nanomind's runtime (greedy, stop at eos)
 * and through transformers.js on the same files, with the same prompt (and image / clip).
 * Columns: partition ok, run ok, tokens identical to transformers.js, nanomind's decode tok/s (median of
 * --runs; TINY random-weight models, so the rate says nothing about real models: it is there to show the
 * path runs at speed, not to compare engines).
 *
 * LLaVA-OneVision anyres (tiles + unpad + anyres_max + image_newline) is not in transformers.js 4.3.1: its
 * row's reference is the PyTorch packing oracle (src/fixtures/llava-anyres-oracle.ts, python3-torch) of
 * the encoder rows, merged and decoded by a plain onnxruntime-node greedy loop (src/fixtures/ort-greedy.ts).
 *
 *   npm run families [-- --runs 3 --only qwen2.5,phi3,llava_onevision_anyres --json]
 *
 * Needs a build (npm run build) and the dev dependencies (@huggingface/transformers).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

process.env.ORT_DISABLE_TELEMETRY = '1';
const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '3' }, only: { type: 'string' }, json: { type: 'boolean' } } });
const RUNS = Number(args.runs);
const only = args.only ? new Set(args.only.split(',')) : undefined;

const dist = (p) => import(new URL(`../dist/${p}`, import.meta.url).href);
const [{ partition }, { openModel, prepareTurn }, { generate }, { runPrompt }, variants, text, gqa, qwen, smol, gemma, whisper, wav, images, llava, florence, anyresOracle, { ortGreedy }] = await Promise.all([
  dist('partition/index.js'), dist('run/model.js'), dist('run/generation/chat-session.js'), dist('run/run.js'), dist('fixtures/variants.js'),
  dist('fixtures/text-families.js'), dist('fixtures/gqa-decoder.js'), dist('fixtures/qwen2-vl.js'), dist('fixtures/smolvlm.js'),
  dist('fixtures/gemma3-vlm.js'), dist('fixtures/whisper-asr.js'), dist('run/inputs/wav.js'), dist('fixtures/images.js'), dist('fixtures/llava.js'),
  dist('fixtures/florence2.js'), dist('fixtures/llava-anyres-oracle.js'), dist('fixtures/ort-greedy.js'),
]);
const tjs = await import('@huggingface/transformers');

const root = await mkdtemp(join(tmpdir(), 'nanomind-families-'));
tjs.env.allowRemoteModels = false;
tjs.env.allowLocalModels = true;
tjs.env.localModelPath = root + '/';
const PROMPT = 'What is in the picture?';
/** Florence-2's task (its processor turns it into 'What does the image describe?'). */
const TASK = '<CAPTION>';
const NEW_TOKENS = 16;
const ALL = [['fp32', ''], ...variants.ALL_VARIANTS.map((v) => [variants.DTYPE_VARIANTS[v].dtype, variants.DTYPE_VARIANTS[v].suffix.slice(1)])];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** transformers.js greedy tokens (plain greedy: generation_config's repetition penalty off), stopping at eos. */
async function reference(f, name, dtype, media, suffix) {
  if (f.kind === 'vlm-anyres') {
    // Oracle: PyTorch packs the vision encoder's rows; a plain ORT loop merges them at nanomind's prompt ids
    // (their <image> count is checked against PyTorch's packed length) and decodes greedily to eos.
    const cfg = f.config;
    const dir = join(root, name);
    const [packed] = await anyresOracle.torchPackAnyres(root, cfg, [await anyresOracle.anyresEncoderRows(dir, media, suffix ? `_${suffix}` : '')]);
    const m = await openModel(join(root, `${name}-${dtype}`));
    let ids, eos;
    try { ids = (await prepareTurn(m, { prompt: PROMPT, images: [{ file: media }] })).inputIds; eos = m.set.eosTokenIds; } finally { await m.close(); }
    if (ids.filter((t) => t === cfg.imageTokenId).length * cfg.text.hidden !== packed.length) throw new Error('<image> tokens ≠ PyTorch packed rows');
    return ortGreedy({ dir, suffix: suffix ? `_${suffix}` : '', promptIds: ids, features: packed, imageTokenId: cfg.imageTokenId, newTokens: NEW_TOKENS,
      positionIds: { start: 0 }, numLogitsToKeep: false, layers: cfg.text.layers, kvHeads: cfg.text.kvHeads, headDim: cfg.text.headDim, stopAt: eos });
  }
  if (f.kind === 'text') {
    const tok = await tjs.AutoTokenizer.from_pretrained(name);
    const model = await tjs.AutoModelForCausalLM.from_pretrained(name, { dtype });
    try {
      const enc = tok.apply_chat_template([{ role: 'user', content: PROMPT }], { add_generation_prompt: true, return_dict: true });
      const out = await model.generate({ ...enc, max_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0 });
      return Array.from(out.data, Number).slice(enc.input_ids.dims[1]);
    } finally { await model.dispose(); }
  }
  if (f.kind === 'vlm' && f.noProcessor) {
    // LLaVA-OneVision: no processor class in transformers.js 4.3.1; tokenizer template + <image> × image_seq_length.
    const tok = await tjs.AutoTokenizer.from_pretrained(name);
    const ip = await tjs.AutoImageProcessor.from_pretrained(name);
    const config = JSON.parse(await readFile(join(root, name, 'config.json'), 'utf8'));
    const model = await f.cls.from_pretrained(name, { dtype });
    try {
      const t = tok.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: PROMPT }] }], { add_generation_prompt: true, tokenize: false });
      const ids = tok.encode(t, { add_special_tokens: false }).flatMap((x) => (x === config.image_token_index ? Array(config.image_seq_length).fill(x) : [x]));
      const { pixel_values } = await ip(await tjs.RawImage.read(media));
      const out = await model.generate({
        input_ids: new tjs.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
        attention_mask: new tjs.Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
        pixel_values, max_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0,
      });
      return Array.from(out.data, Number).slice(ids.length);
    } finally { await model.dispose(); }
  }
  if (f.kind === 'vlm') {
    const processor = await tjs.AutoProcessor.from_pretrained(name);
    const model = await f.cls.from_pretrained(name, { dtype });
    try {
      const t = processor.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: PROMPT }] }], { add_generation_prompt: true });
      const inputs = await processor(t, await tjs.RawImage.read(media), { add_special_tokens: false });
      const out = await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0 });
      return Array.from(out.data, Number).slice(inputs.input_ids.dims[1]);
    } finally { await model.dispose(); }
  }
  if (f.kind === 'vision-seq2seq') {
    const processor = await tjs.AutoProcessor.from_pretrained(name);
    const model = await tjs.Florence2ForConditionalGeneration.from_pretrained(name, { dtype });
    try {
      const inputs = await processor(await tjs.RawImage.read(media), TASK);
      // The folder's generation_config as is: its num_beams 3 keeps the best token of each step in transformers.js 4.3.1 (greedy).
      const out = await model.generate({ ...inputs, max_new_tokens: NEW_TOKENS });
      return Array.from(out.data, Number);
    } finally { await model.dispose(); }
  }
  const fe = await tjs.AutoFeatureExtractor.from_pretrained(name);
  const model = await tjs.AutoModelForSpeechSeq2Seq.from_pretrained(name, { dtype });
  try {
    const { input_features } = await fe(media.samples);
    const out = await model.generate({ inputs: input_features, max_new_tokens: NEW_TOKENS, language: 'en', task: 'transcribe' });
    return Array.from(out.data, Number);
  } finally { await model.dispose(); }
}

/** nanomind: tokens of the first run, decode tok/s median over RUNS runs. */
async function nanomind(f, bricks, media) {
  const m = await openModel(bricks, { resampler: f.resampler });
  try {
    let tokens, rates = [];
    for (let r = 0; r < RUNS; r++) {
      let res;
      if (f.kind === 'asr') {
        const out = await runPrompt(m, { audio: [{ file: media.file }] }, { maxNewTokens: NEW_TOKENS });
        res = { tokens: out.tokens, stats: out.stats };
      } else if (f.kind === 'vision-seq2seq') {
        const out = await runPrompt(m, { prompt: TASK, images: [{ file: media }] }, { maxNewTokens: NEW_TOKENS });
        res = { tokens: out.stopReason === 'eos' ? [...out.tokens, florence.FLORENCE2_TOKENS['</s>']] : out.tokens, stats: out.stats };
      } else {
        const turn = await prepareTurn(m, { prompt: PROMPT, images: f.kind === 'vlm' || f.kind === 'vlm-anyres' ? [{ file: media }] : undefined });
        res = await generate(m.set, { inputIds: turn.inputIds, features: turn.features, mropePositions: turn.mropePositions }, { maxNewTokens: NEW_TOKENS });
      }
      tokens ??= [...res.tokens];
      rates.push(res.stats.decodeTokPerS);
    }
    return { tokens, tokPerS: median(rates) };
  } finally { await m.close(); }
}

const FAMILIES = [
  ...text.TEXT_FAMILIES.map((name) => ({ name, kind: 'text', dtypes: ALL, build: async (d) => { await text.buildTextFamily(d, name, { seed: 1 }); await variants.writeDtypeVariants(join(d, 'onnx'), ['model']); } })),
  ...['phi3', 'phi3_longrope', 'qwen3', 'gemma3_text'].map((name) => ({ name: `${name} (GQA)`, kind: 'text', dtypes: ALL.filter(([d]) => ['fp32', 'fp16', 'q4', 'q4f16'].includes(d)), build: (d) => gqa.buildGqaTextLm(d, { family: name }) })),
  ...[
    { name: 'qwen2_vl', cls: tjs.Qwen2VLForConditionalGeneration, build: (d) => qwen.buildTinyQwen2Vl(d, { variant: 'qwen2_vl', seed: 7 }), image: [112, 56] },
    { name: 'qwen2_5_vl', cls: tjs.Qwen2_5_VLForConditionalGeneration, build: (d) => qwen.buildTinyQwen2Vl(d, { variant: 'qwen2_5_vl', seed: 0 }), image: [112, 56] },
    { name: 'smolvlm', cls: tjs.AutoModelForImageTextToText, build: (d) => smol.buildTinySmolVlm(d, { family: 'smolvlm' }), image: [64, 32], resampler: 'sharp-affine' },
    { name: 'smolvlm2', cls: tjs.AutoModelForImageTextToText, build: (d) => smol.buildTinySmolVlm(d, { family: 'smolvlm2' }), image: [64, 32], resampler: 'sharp-affine' },
    { name: 'llava_onevision', cls: tjs.AutoModelForImageTextToText, build: (d) => llava.buildTinyLlava(d), image: [32, 32], noProcessor: true },
    { name: 'gemma3', cls: tjs.AutoModelForImageTextToText, build: (d) => gemma.buildTinyGemma3Vlm(d, { seed: 1 }), image: [32, 32], resampler: 'sharp-affine' },
  ].map((v) => ({ ...v, kind: 'vlm', dtypes: ALL, build: async (d) => { await v.build(d); await variants.writeDtypeVariants(join(d, 'onnx'), ['vision_encoder', 'embed_tokens', 'decoder_model_merged'], variants.ALL_VARIANTS, { fp16Io: 'float32' }); } })),
  // LLaVA-OneVision with anyres (the real config's 6 × 6 pinpoint grid, anyres_max_9, image_newline as an
  // encoder output); the 160 × 128 image is cut into 4 × 5 tiles whose map is downscaled.
  ...(anyresOracle.torchMissing() ? [] : [{
    name: 'llava_onevision_anyres', kind: 'vlm-anyres', dtypes: ALL, image: [160, 128],
    config: llava.tinyLlavaConfig({ anyres: { newline: 'output' } }),
    build: async (d) => {
      await llava.buildTinyLlava(d, { anyres: { newline: 'output' } });
      await variants.writeDtypeVariants(join(d, 'onnx'), ['vision_encoder', 'embed_tokens', 'decoder_model_merged'], variants.ALL_VARIANTS, { fp16Io: 'float32' });
    },
  }]),
  // The fixture writes fp16 and q8 itself; the hub's other variants come from the shared variant writer.
  { name: 'whisper', kind: 'asr', dtypes: ALL, build: async (d) => {
    await whisper.buildTinyWhisper(d);
    await variants.writeDtypeVariants(join(d, 'onnx'), ['encoder_model', 'decoder_model_merged'], ['q4', 'q4f16', 'int8', 'uint8', 'bnb4'], { fp16Io: 'float32' });
  } },
  // The fixture writes every hub variant itself (writeDtypeVariants, float32 I/O); the 32×32 image needs no resize.
  { name: 'florence2', kind: 'vision-seq2seq', dtypes: ALL, build: (d) => florence.buildTinyFlorence2(d), image: [32, 32] },
].filter((f) => !only || only.has(f.name.replace(' (GQA)', '')));

const rows = [];
for (const f of FAMILIES) {
  const dirName = f.name.replace(/[^a-z0-9_.]/gi, '');
  const dir = join(root, dirName);
  await f.build(dir);
  let media;
  if (f.kind === 'vlm' || f.kind === 'vlm-anyres' || f.kind === 'vision-seq2seq') media = await images.writePatternPng(join(root, `${dirName}.png`), f.image[0], f.image[1], 0);
  if (f.kind === 'asr') {
    const pcm = Int16Array.from({ length: 12000 }, (_, i) => Math.round(12000 * Math.sin((2 * Math.PI * 440 * i) / 16000) + 4000 * Math.sin((2 * Math.PI * 1234 * i) / 16000)));
    const file = join(root, 'clip.wav');
    await writeFile(file, wav.encodeWavPcm16(pcm, 16000));
    media = { file, samples: Float32Array.from(pcm, (v) => v / 32768) };
  }
  for (const [dtype, suffix] of f.dtypes) {
    const row = { family: f.name, dtype, partition: false, run: false, same: false, tokPerS: null, error: undefined };
    try {
      const bricks = join(root, `${dirName}-${dtype}`);
      await partition({ input: dir, out: bricks, dtype: suffix || undefined });
      row.partition = true;
      const got = await nanomind(f, bricks, media);
      row.run = true;
      row.tokPerS = got.tokPerS;
      const ref = await reference(f, dirName, dtype, media, suffix);
      // Whisper's reference holds the forced prefix (start of transcript, language, task, no timestamps)
      // and the closing eos; nanomind's transcript tokens hold neither. Florence-2's holds the decoder
      // start token (nanomind's tokens then get the </s> that stopped them, see nanomind()).
      row.same = f.kind === 'asr' ? JSON.stringify(ref.slice(4, ref.length - 1)) === JSON.stringify(got.tokens)
        : f.kind === 'vision-seq2seq' ? JSON.stringify(ref.slice(1)) === JSON.stringify(got.tokens)
          : JSON.stringify(ref) === JSON.stringify(got.tokens);
      row.tokens = got.tokens.length;
      if (process.env.FAMILIES_DEBUG) console.error(JSON.stringify({ ref, got: got.tokens }));
    } catch (e) {
      row.error = `${e.code ?? 'internal'}: ${String(e.message).split('\n')[0].slice(0, 120)}`;
    }
    rows.push(row);
    if (!args.json) process.stderr.write(`${f.name} ${dtype}: ${row.error ?? (row.same ? 'same tokens' : 'DIFFERENT tokens')}\n`);
  }
}
await rm(root, { recursive: true, force: true });

const machine = `${cpus().length} × ${cpus()[0]?.model.trim()}, load average ${loadavg()[0].toFixed(1)}, Node ${process.version}`;
if (args.json) console.log(JSON.stringify({ machine, runs: RUNS, newTokens: NEW_TOKENS, rows }, null, 2));
else {
  const yes = (b) => (b ? 'yes' : 'no');
  console.log(`| family | dtype | partition | run | tokens = transformers.js | decode tok/s |`);
  console.log(`|---|---|---|---|---|---:|`);
  for (const r of rows) console.log(`| ${r.family} | ${r.dtype} | ${yes(r.partition)} | ${yes(r.run)} | ${r.error ? `no (${r.error})` : yes(r.same)} | ${r.tokPerS === null ? '—' : r.tokPerS.toFixed(0)} |`);
  console.log(`\n${machine}; median of ${RUNS} runs, ≤ ${NEW_TOKENS} new tokens; tiny random-weight fixtures.`);
  if (FAMILIES.some((f) => f.kind === 'vlm-anyres')) console.log('llava_onevision_anyres: reference = PyTorch pack_image_features + a plain ORT greedy loop (transformers.js 4.3.1 has no anyres).');
}
if (rows.some((r) => !r.same)) process.exitCode = 1;
