/**
 * Partition's shared-buffer detection (src/partition/kv-share.ts) on the exporters' real graph
 * structures — onnxruntime-genai's builder (phi3, qwen3) and build_gemma.py (gemma3_text), in float32
 * and float16 — against Optimum-style Concat decoders and against builder graphs changed in the ways
 * that make a max-length buffer unsafe; and bricks.json's `kvCache` field (old files without it).
 * Oracle for "unsafe": each mutation makes another node read the cache or take a length from
 * something other than the mask, which the test states by construction.
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type ModelProto, type NodeProto } from 'onnx-buf';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGqaTextLm, GQA_FILES } from '../../src/fixtures/gqa-decoder.js';
import { buildTextFamily } from '../../src/fixtures/text-families.js';
import { Graph } from '../../src/onnx/graph.js';
import { loadModel } from '../../src/onnx/model-io.js';
import { partition } from '../../src/partition/index.js';
import { kvCacheMode } from '../../src/partition/kv-share.js';
import { openBrickSet } from '../../src/run/brick-set.js';
import { ChatSession } from '../../src/run/generation/chat-session.js';
import { code } from '../error-codes.js';

let root: string;
beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'nanomind-kvshare-')); });
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

const graphOf = (m: ModelProto) => new Graph(m.graph!);

async function phi3(): Promise<ModelProto> {
  const dir = join(root, 'phi3');
  await buildGqaTextLm(dir, { family: 'phi3', variants: ['fp32'] });
  return (await loadModel(join(dir, 'onnx', GQA_FILES.fp32))).model;
}

/** Adds a node to a copy of the graph (then `edit` may rewire existing nodes). */
function withNode(m: ModelProto, op: string, input: string[], output: string[], edit?: (nodes: NodeProto[]) => void): Graph {
  const g = m.graph!;
  const nodes = g.node.map((n) => create(NodeProtoSchema, { ...n, input: [...n.input], output: [...n.output] }));
  nodes.push(create(NodeProtoSchema, { opType: op, name: `/test/${op}`, input, output }));
  edit?.(nodes);
  return new Graph({ ...g, node: nodes });
}

describe('kvCacheMode', () => {
  it('is shared-buffer for the builder and build_gemma.py layouts, every precision', async () => {
    for (const [family, variant] of [['phi3', 'fp32'], ['qwen3', 'fp16'], ['gemma3_text', 'q4f16'], ['phi3_longrope', 'q4']] as const) {
      const dir = join(root, `${family}-${variant}`);
      await buildGqaTextLm(dir, { family, variants: [variant] });
      expect([family, variant, kvCacheMode(graphOf((await loadModel(join(dir, 'onnx', GQA_FILES[variant]))).model))])
        .toEqual([family, variant, 'shared-buffer']);
    }
  });

  it('is concat for an Optimum-style decoder (MatMul/Softmax attention, Concat KV)', async () => {
    const dir = join(root, 'qwen2.5');
    await buildTextFamily(dir, 'qwen2.5');
    expect(kvCacheMode(graphOf((await loadModel(join(dir, 'onnx', 'model.onnx'))).model))).toBe('concat');
  });

  it('is concat when anything besides GroupQueryAttention touches the cache or the lengths', async () => {
    const m = await phi3();
    expect(kvCacheMode(graphOf(m))).toBe('shared-buffer');
    const gqa = (nodes: NodeProto[], i: number) => nodes.find((n) => n.name === `/model/layers.${i}/attn/GroupQueryAttention`)!;
    // A Shape of a past input (a position or length computed from it) would see the max-length buffer.
    expect(kvCacheMode(withNode(m, 'Shape', ['past_key_values.1.value'], ['past_len']))).toBe('concat');
    // A Cast between the past input and GQA: GQA no longer sees the fed buffer.
    expect(kvCacheMode(withNode(m, 'Cast', ['past_key_values.0.key'], ['pk_cast'], (ns) => { gqa(ns, 0).input[3] = 'pk_cast'; }))).toBe('concat');
    // Another reader of a present output.
    expect(kvCacheMode(withNode(m, 'Identity', ['present.1.key'], ['pk_copy']))).toBe('concat');
    // total_sequence_length taken from input_ids instead of the mask.
    expect(kvCacheMode(withNode(m, 'Shape', ['input_ids'], ['ids_shape'], (ns) => { gqa(ns, 1).input[6] = 'ids_shape'; }))).toBe('concat');
  });
});

describe('bricks.json kvCache', () => {
  it('is written on the decoder; an older file without it opens as concat and generates the same tokens', async () => {
    const dir = join(root, 'phi3-src');
    await buildGqaTextLm(dir, { family: 'phi3', variants: ['fp32'] });
    const out = join(root, 'phi3-bricks');
    const { manifest } = await partition({ input: dir, out });
    expect(manifest.bricks.map((b) => [b.kind, b.kvCache])).toEqual([['decoder', 'shared-buffer']]);
    const ids = [11, 300, 42, 7, 259, 120];
    const opts = { maxNewTokens: 10, stopTokenIds: [] };
    let set = await openBrickSet(out);
    const shared = await new ChatSession(set).generate({ inputIds: ids }, opts);
    await set.close();

    const file = join(out, 'bricks.json');
    const raw = JSON.parse(await readFile(file, 'utf8'));
    delete raw.bricks[0].kvCache;
    await writeFile(file, JSON.stringify(raw));
    set = await openBrickSet(out);
    expect(set.decoder.kv!.mode).toBe('concat');
    const s = new ChatSession(set);
    expect(s.kvCache!.mode).toBe('concat');
    expect((await s.generate({ inputIds: ids }, opts)).tokens).toEqual(shared.tokens);
    await set.close();

    raw.bricks[0].kvCache = 'paged';
    await writeFile(file, JSON.stringify(raw));
    expect(await code(openBrickSet(out))).toBe('E_BRICKS_INVALID');
  });
});
