/**
 * Text-only decoder families as the hub exports them (src/fixtures/text-families.ts), through
 * nanomind's own path — partition (adopt) → openModel → chat template → greedy generation — against
 * transformers.js on the same files: the same prompt ids from the same chat template, and the same
 * greedy tokens. Oracle: transformers.js 4.3.1 (AutoTokenizer + AutoModelForCausalLM over the folder).
 * The GroupQueryAttention decoders run with the shared-buffer KV cache (partition marks them so), the
 * Optimum-style ones with the concat cache; each case asserts which one the session used.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer } from '@huggingface/transformers';
import { transformersJsRoot } from './helpers.js';
import { TEXT_FAMILIES, buildTextFamily, type TextFamily } from '../../src/fixtures/text-families.js';
import { ALL_VARIANTS, DTYPE_VARIANTS, writeDtypeVariants } from '../../src/fixtures/variants.js';
import { GQA_VARIANTS, buildGqaTextLm } from '../../src/fixtures/gqa-decoder.js';
import { GQA_FAMILY_NAMES, type GqaFamilyName } from '../../src/fixtures/gqa-families.js';
import { partition } from '../../src/partition/index.js';
import { openModel, prepareTurn } from '../../src/run/model.js';
import { ChatSession } from '../../src/run/generation/chat-session.js';
import type { KvCacheMode } from '../../src/formats/bricks.js';

const NEW_TOKENS = 12;
const PROMPT = 'the cat and the dog';
const tjsRoot = transformersJsRoot('nanomind-families-');
let root: string;
beforeAll(() => { root = tjsRoot.dir(); });

async function transformersJs(name: string, dtype: string): Promise<{ prompt: number[]; tokens: number[] }> {
  const tok = await AutoTokenizer.from_pretrained(name);
  const model = await AutoModelForCausalLM.from_pretrained(name, { dtype: dtype as 'fp32' });
  try {
    // Plain greedy on both sides: generation_config's repetition_penalty (Qwen2.5: 1.05) is turned off here.
    const enc = tok.apply_chat_template([{ role: 'user', content: PROMPT }], { add_generation_prompt: true, return_dict: true }) as
      { input_ids: { data: BigInt64Array; dims: number[] }; attention_mask: unknown };
    const out = await model.generate({ ...enc, max_new_tokens: NEW_TOKENS, do_sample: false, repetition_penalty: 1.0 } as never) as
      { data: BigInt64Array; dims: number[] };
    const prompt = Array.from(enc.input_ids.data, Number);
    return { prompt, tokens: Array.from(out.data, Number).slice(prompt.length) };
  } finally {
    await model.dispose();
  }
}

async function nanomind(dir: string, out: string, dtype: string): Promise<{ prompt: number[]; tokens: number[]; manifest?: KvCacheMode; used?: KvCacheMode }> {
  const { manifest } = await partition({ input: dir, out, dtype: dtype === 'fp32' ? undefined : dtype });
  const m = await openModel(out);
  try {
    const turn = await prepareTurn(m, { prompt: PROMPT });
    // Both stop at the model's eos ids (generation_config.json) and return the eos token itself.
    const session = new ChatSession(m.set);
    const r = await session.generate({ inputIds: turn.inputIds }, { maxNewTokens: NEW_TOKENS });
    return { prompt: turn.inputIds, tokens: [...r.tokens], manifest: manifest.bricks.find((b) => b.kind === 'decoder')!.kvCache, used: session.kvCache?.mode };
  } finally {
    await m.close();
  }
}

// Optimum-style exports in every dtype the hub ships (fp16 / q4f16 with float16 I/O: KV cache and logits).
const DTYPES = [['fp32', ''], ...ALL_VARIANTS.map((v) => [DTYPE_VARIANTS[v].dtype, DTYPE_VARIANTS[v].suffix.slice(1)])] as const;

describe.each(TEXT_FAMILIES.map((f) => [f]))('%s', (family: TextFamily) => {
  let dir: string;
  beforeAll(async () => {
    dir = join(root, family);
    await buildTextFamily(dir, family, { seed: 1 });
    await writeDtypeVariants(join(dir, 'onnx'), ['model']);
  });
  it.each(DTYPES.map(([d, s]) => [d, s]))('%s: same prompt ids and greedy tokens as transformers.js', async (dtype, suffix) => {
    const ref = await transformersJs(family, dtype);
    const got = await nanomind(dir, join(root, `${family}-${dtype}-bricks`), suffix || 'fp32');
    expect(got.prompt).toEqual(ref.prompt);
    expect(got.tokens).toEqual(ref.tokens);
    expect([got.manifest, got.used]).toEqual(['concat', 'concat']);
    // A comparison of one repeated token would prove little: the float model answers with several
    // (a 4-bit copy of random weights may collapse onto one; it is compared all the same).
    if (dtype === 'fp32') expect(new Set(ref.tokens).size).toBeGreaterThan(2);
  });
});

// onnxruntime-genai builder / build_gemma.py exports: GroupQueryAttention, no position_ids (builder) or
// 0/1-based position_ids (gemma), float16 KV and logits in the fp16 / q4f16 variants.
describe.each(GQA_FAMILY_NAMES.map((f) => [f]))('%s (GroupQueryAttention)', (family: GqaFamilyName) => {
  let dir: string;
  beforeAll(async () => { dir = join(root, family); await buildGqaTextLm(dir, { family }); });
  it.each(GQA_VARIANTS.map((v) => [v]))('%s: same prompt ids and greedy tokens as transformers.js', async (dtype) => {
    const ref = await transformersJs(family, dtype);
    const got = await nanomind(dir, join(root, `${family}-${dtype}-bricks`), dtype);
    expect(got.prompt).toEqual(ref.prompt);
    expect(got.tokens).toEqual(ref.tokens);
    expect([got.manifest, got.used]).toEqual(['shared-buffer', 'shared-buffer']);
    if (dtype === 'fp32') expect(new Set(ref.tokens).size).toBeGreaterThan(2);
  });
});
