/**
 * The shared-buffer KV cache (GroupQueryAttention decoders, run/generation/kv-cache.ts) over a whole
 * conversation: prefix reuse, a divergent turn (truncation), a failed call, the context filling up,
 * buffers that grow with the cache. Oracle: transformers.js 4.3.1 greedy generation on the same ids
 * over the same folder (it keeps its own growing cache, no code shared with nanomind's runtime).
 * Then what a decode step allocates, seen from the backend's return values: concat mode gets new,
 * growing present tensors every step, shared mode gets its own buffers back. (Not visible here:
 * onnxruntime-node still copies each fetched output, preallocated ones included, into an ArrayBuffer
 * that ort-cpu.ts drops; that copy is as long as the buffer, which is why kv-cache.ts grows the buffers
 * with the cache instead of allocating the whole context.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, Tensor, env } from '@huggingface/transformers';
import { buildGqaTextLm, type GqaVariant } from '../../src/fixtures/gqa-decoder.js';
import type { GqaFamilyName } from '../../src/fixtures/gqa-families.js';
import { partition } from '../../src/partition/index.js';
import { openBrickSet, type BrickSet } from '../../src/run/brick-set.js';
import type { TensorLike } from '../../src/run/backend.js';
import { ChatSession } from '../../src/run/generation/chat-session.js';

let root: string;
const opened: BrickSet[] = [];
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nanomind-kvshared-'));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root + '/';
});
afterAll(async () => {
  for (const s of opened) await s.close();
  await rm(root, { recursive: true, force: true });
});

async function bricks(family: GqaFamilyName, dtype: GqaVariant): Promise<BrickSet> {
  const dir = join(root, family);
  await buildGqaTextLm(dir, { family, variants: [dtype] });
  const out = join(root, `${family}-${dtype}-bricks`);
  await partition({ input: dir, out, dtype: dtype === 'fp32' ? undefined : dtype });
  const set = await openBrickSet(out, { threads: 1 });
  opened.push(set);
  return set;
}

/** transformers.js greedy continuation of `ids`: exactly `n` tokens, eos included (no stop), no repetition penalty. */
async function oracle(family: string, dtype: GqaVariant, ids: readonly number[], n: number): Promise<number[]> {
  const model = await AutoModelForCausalLM.from_pretrained(family, { dtype: dtype as 'fp32' });
  try {
    const input_ids = new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const attention_mask = new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
    // eos_token_id null: no stop and no eos suppression (min_new_tokens would ban eos where greedy picks it).
    const out = await model.generate({ input_ids, attention_mask, max_new_tokens: n, eos_token_id: null, do_sample: false, repetition_penalty: 1.0 } as never) as
      { data: BigInt64Array };
    const tokens = Array.from(out.data, Number).slice(ids.length);
    if (tokens.length !== n) throw new Error(`transformers.js gave ${tokens.length} tokens, not ${n}`);
    return tokens;
  } finally {
    await model.dispose();
  }
}

const N = 8;
const NO_STOP = { maxNewTokens: N, stopTokenIds: [] as number[] };

describe.each([['phi3', 'fp32'], ['gemma3_text', 'q4f16']] as const)('shared-buffer KV cache, %s %s', (family, dtype) => {
  it('a multi-turn conversation with prefix reuse, a divergent turn and a failed call gives transformers.js\'s tokens', async () => {
    const set = await bricks(family, dtype);
    expect(set.decoder.kv!.mode).toBe('shared-buffer');
    expect(set.decoder.kv!.dtype).toBe(dtype === 'fp32' ? 'float32' : 'float16');
    // Buffers grow 8 rows at a time, so the conversation makes them grow with the cache in them.
    const s = new ChatSession(set, { kvGrowRows: 8 });
    expect(s.kvCache!.mode).toBe('shared-buffer');
    const p1 = [11, 300, 42, 7, 259, 120, 88, 17, 230, 99];

    const a = await s.generate({ inputIds: p1 }, NO_STOP);
    expect(a.tokens).toEqual(await oracle(family, dtype, p1, N));
    expect(new Set(a.tokens).size).toBeGreaterThan(2);

    // Turn 2 repeats turn 1 and its answer: everything the session fed is reused.
    const t2 = [...p1, ...a.tokens, 5, 313, 64, 150, 201];
    const b = await s.generate({ inputIds: t2 }, NO_STOP);
    expect(b.stats.reusedTokens).toBe(p1.length + N - 1);
    expect(b.tokens).toEqual(await oracle(family, dtype, t2, N));

    // Turn 3 diverges right after p1: the cache goes back to p1's 10 tokens; rows after them are stale.
    const t3 = [...p1, 66, 3, 150];
    const c = await s.generate({ inputIds: t3 }, NO_STOP);
    expect(c.stats.reusedTokens).toBe(p1.length);
    expect(c.tokens).toEqual(await oracle(family, dtype, t3, N));

    // A call that fails mid-decode leaves the session at what the decoder consumed; the next call recovers.
    const t4 = [...t3, ...c.tokens, 42, 42, 7];
    await expect(s.generate({ inputIds: t4 }, { ...NO_STOP, onToken: (e) => { if (e.index === 3) throw new Error('stop here'); } })).rejects.toThrow('stop here');
    expect(s.tokens.length).toBe(s.kvCache!.length);
    const d = await s.generate({ inputIds: t4 }, NO_STOP);
    expect(d.stats.reusedTokens).toBeGreaterThan(t3.length);
    expect(d.tokens).toEqual(await oracle(family, dtype, t4, N));
    // Steps ran to 10, 17, then at most 31 tokens: 16 → 24 → 32 rows.
    expect(s.kvCache!.buffers).toEqual({ rows: 32, allocations: 3 });
  });

  it('stops with context-full at maxContext, the buffers capped there', async () => {
    const set = await bricks(family, dtype);
    const p = [11, 300, 42, 7, 259, 120, 88, 17, 230, 99];
    const s = new ChatSession(set, { maxContext: 15, kvGrowRows: 8 });
    const r = await s.generate({ inputIds: p }, { ...NO_STOP, maxNewTokens: 50 });
    expect(r.stopReason).toBe('context-full');
    // The last sampled token is not fed, so 15 positions give 6 new tokens after a 10-token prompt.
    expect(r.tokens).toEqual((await oracle(family, dtype, p, 6)));
    expect(s.kvCache!.buffers).toEqual({ rows: 15, allocations: 1 });
  });
});

describe('what a decode step allocates', () => {
  it('concat: new present tensors every step, one row longer; shared-buffer: the same buffers every step', async () => {
    const set = await bricks('phi3', 'fp32');
    const { layers, kvHeads, headDim } = set.decoder.kv!;
    const p = [11, 300, 42, 7, 259, 120, 88, 17, 230, 99];
    const steps: { presents: TensorLike[]; fed: TensorLike[] }[] = [];
    // The runtime's only way to the decoder is BrickSet.run: record what each call fed and got back.
    const spy: BrickSet = {
      ...set,
      async run(name, feeds, opts) {
        const out = await set.run(name, feeds, opts);
        steps.push({
          presents: Object.entries(out).filter(([k]) => k.startsWith('present.')).map(([, t]) => t),
          fed: Object.entries(feeds).filter(([k]) => k.startsWith('past_key_values.')).map(([, t]) => t),
        });
        return out;
      },
    };
    const tokens: Record<string, readonly number[]> = {};
    for (const mode of ['concat', 'shared-buffer'] as const) {
      steps.length = 0;
      const s = new ChatSession(spy, { kvCache: mode, kvGrowRows: 64 });
      tokens[mode] = (await s.generate({ inputIds: p }, { ...NO_STOP, maxNewTokens: 12 })).tokens;
      expect(steps).toHaveLength(12); // prefill + 11 decode steps
      expect(steps.every((st) => st.presents.length === 2 * layers)).toBe(true);
      const decode = steps.slice(1);
      if (mode === 'concat') {
        decode.forEach((st, k) => {
          const rows = p.length + k + 1;
          // Fresh memory, sized for the whole context so far.
          for (const t of st.presents) expect(t.data.byteLength).toBe(kvHeads * rows * headDim * 4);
          const before = new Set(steps.slice(0, k + 1).flatMap((x) => x.presents.map((t) => t.data.buffer)));
          expect(st.presents.some((t) => before.has(t.data.buffer))).toBe(false);
        });
      } else {
        const first = steps[0]!.presents.map((t) => t.data);
        for (const st of steps) {
          // The backend hands back the buffers the session fed as past: nothing new per step.
          expect(st.presents.map((t) => t.data)).toEqual(first);
          st.presents.forEach((t, i) => { expect(t.data).toBe(first[i]); expect(t.data).toBe(st.fed[i]!.data); });
          for (const t of st.presents) expect(t.data.byteLength).toBe(kvHeads * 64 * headDim * 4);
        }
        expect(s.kvCache!.buffers.allocations).toBe(1);
      }
    }
    expect(tokens['shared-buffer']).toEqual(tokens.concat);
  });
});

describe('refusals', () => {
  it('left padding and a shared buffer on a decoder that does not allow it', async () => {
    const set = await bricks('qwen3', 'fp32');
    const s = new ChatSession(set);
    await expect(s.generate({ inputIds: [0, 5, 6], attentionMask: [0, 1, 1] })).rejects.toMatchObject({ code: 'E_BAD_INPUT' });
    const concat: BrickSet = { ...set, decoder: { ...set.decoder, kv: { ...set.decoder.kv!, mode: 'concat' } } };
    expect(() => new ChatSession(concat, { kvCache: 'shared-buffer' })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    // Forcing concat on a GQA decoder is allowed (the benchmark compares both).
    expect(new ChatSession(set, { kvCache: 'concat' }).kvCache!.mode).toBe('concat');
  });
});
