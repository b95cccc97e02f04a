/**
 * `--add-kv-cache`: gives a decoder brick cut from a graph exported without a cache the onnx-community
 * cache interface — `past_key_values.{i}.key|value` in, `present.{i}.key|value` out — so the runtime
 * decodes one token per step instead of re-running the whole conversation.
 *
 * It recognises the attention of HF decoder exports: per layer `Softmax(MatMul(q, kᵀ)·scale + mask)`
 * then `MatMul(·, v)`, with k and v `[batch, kv_heads, seq, head_dim]` before HF's `repeat_kv`
 * (Unsqueeze → Expand → Reshape). It concatenates the past in front of k and v on the sequence axis,
 * and keeps only the last `sequence_length` rows of in-graph position ids (cumsum of the mask, as HF's
 * generate slices them). Whether the graph's causal mask already allows a past (it must be built from
 * the attention mask's length, not the query's) is not decided here: partition's verification runs the
 * cached step against the original recomputing the whole sequence, and refuses the result otherwise.
 * Anything it does not recognise is an E_KV_REWRITE error naming the node; the graph is then unchanged.
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type ModelProto, type NodeProto } from 'onnx-buf';
import { fail } from '../errors.js';
import { TENSOR, pastKey, pastValue } from '../formats/names.js';
import { makeAttribute, makeTensor, makeValueInfo } from '../onnx/builder.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { InputSet } from '../onnx/input-set.js';
import { inferTypes } from '../onnx/shape-infer.js';

export interface KvRewrite { readonly layers: number; readonly positions: 'sliced' | 'input' }

const LAYOUT = new Set(['Transpose', 'Reshape', 'Expand', 'Unsqueeze']);

/** Rewrites `model` (a decoder brick) in place; throws E_KV_REWRITE, leaving it unchanged, when it cannot. */
export function addKvCache(model: ModelProto): KvRewrite {
  const proto = model.graph!;
  if (proto.input.some((i) => /^past_key_values/.test(i.name))) throw fail('E_KV_REWRITE', 'the decoder already takes past_key_values');
  // Nodes and lists may be shared with the graph this brick was cut from: edit copies.
  proto.node = proto.node.map((n) => create(NodeProtoSchema, { ...n, input: [...n.input], output: [...n.output] }));
  proto.input = [...proto.input];
  proto.output = [...proto.output];
  proto.initializer = [...proto.initializer];
  const g = new Graph(proto);
  for (const [k, v] of inferTypes(g)) g.types.set(k, mergeTypes(g.types.get(k), v));
  const embeds = g.inputs.find((i) => i.name === TENSOR.inputsEmbeds || i.name === TENSOR.inputIds)?.name;
  const mask = g.inputs.find((i) => i.name === TENSOR.attentionMask)?.name;
  if (!embeds || !mask) throw fail('E_KV_REWRITE', `the decoder needs ${TENSOR.inputsEmbeds} (or ${TENSOR.inputIds}) and ${TENSOR.attentionMask} inputs`);
  const producer = (v: string): NodeProto | undefined => g.producer.get(v);
  const only = (n: NodeProto | undefined, op: string) => (n?.opType === op ? n : undefined);

  // 1. Per layer (Softmax order), the k and v before repeat_kv.
  const layers: { k: string; v: string; at: string }[] = [];
  for (const s of g.nodes.filter((n) => n.opType === 'Softmax')) {
    const qk = g.cone([s.input[0]]).reverse().find((n) => n.opType === 'MatMul');
    const pv = (g.consumers.get(s.output[0]) ?? []).find((n) => n.opType === 'MatMul' && n.input[0] === s.output[0]);
    if (!qk || !pv) throw fail('E_KV_REWRITE', `attention at '${s.name}': no MatMul(q, kᵀ) before or MatMul(·, v) after the Softmax`);
    const kT = only(producer(qk.input[1]), 'Transpose');
    const perm = kT?.attribute.find((a) => a.name === 'perm')?.ints.map(Number);
    if (!kT || !perm || perm.length !== 4 || perm[2] !== 3 || perm[3] !== 2) throw fail('E_KV_REWRITE', `attention at '${s.name}': kᵀ is not a Transpose of the last two axes`);
    const k = beforeRepeat(kT.input[0]), v = beforeRepeat(pv.input[1]);
    for (const [what, t] of [['k', k], ['v', v]] as const) {
      const shape = g.typeOf(t).shape;
      if (shape?.length !== 4 || typeof shape[1] !== 'number' || typeof shape[3] !== 'number')
        throw fail('E_KV_REWRITE', `attention at '${s.name}': ${what} '${t}' is not [batch, heads, seq, head_dim] (shape ${JSON.stringify(shape)})`);
    }
    layers.push({ k, v, at: s.name });
  }
  if (!layers.length) throw fail('E_KV_REWRITE', 'no attention (Softmax) in the decoder');

  /** HF repeat_kv: Reshape(Expand(Unsqueeze(x))) → x; anything else is x already. */
  function beforeRepeat(x: string): string {
    const r = only(producer(x), 'Reshape'), e = only(producer(r?.input[0] ?? ''), 'Expand'), u = only(producer(e?.input[0] ?? ''), 'Unsqueeze');
    return r && e && u ? u.input[0] : x;
  }

  // 2. Position ids computed in-graph from the mask (its full length, past included): keep the last rows.
  const roots = g.inputs.map((i) => i.name);
  const deps = g.dependencies(roots);
  const maskOnly = InputSet.of(roots.indexOf(mask));
  const rotary = g.nodes.filter((n) => n.opType === 'Cos' || n.opType === 'Sin');
  const rotaryCone = new Set(g.cone(rotary.flatMap((n) => n.output)));
  const positions = roots.includes(TENSOR.positionIds) ? undefined
    : [...rotaryCone].flatMap((n) => n.output).filter((o) => (deps.get(o) ?? InputSet.EMPTY).equals(maskOnly)
      && g.typeOf(o).dtype === 'int64' && g.typeOf(o).shape?.length === 2 && !LAYOUT.has(producer(o)!.opType)).pop();
  if (!roots.includes(TENSOR.positionIds) && !positions)
    throw fail('E_KV_REWRITE', 'cannot find the rotary position ids (neither a position_ids input nor int64 [batch, seq] values from the attention mask feeding Cos/Sin)');

  // 3. Edit: new inputs, Concat(past, k|v) on the sequence axis as present.*, consumers rewired.
  const nodes: NodeProto[] = [];
  const node = (opType: string, input: string[], output: string, attrs: Record<string, number | number[]> = {}) =>
    nodes.push(create(NodeProtoSchema, { name: `/kv_cache/${output}`, opType, input, output: [output], attribute: Object.entries(attrs).map(([a, v]) => makeAttribute(a, v)) }));
  const rewire = (from: string, to: string, only?: (n: NodeProto) => boolean) => {
    for (const n of proto.node) if (!only || only(n)) n.input = n.input.map((i) => (i === from ? to : i));
  };
  const dims = (t: string) => g.typeOf(t).shape as [unknown, number, unknown, number];
  layers.forEach((l, i) => {
    for (const [value, past, present] of [[l.k, pastKey(i), `present.${i}.key`], [l.v, pastValue(i), `present.${i}.value`]]) {
      const [, heads, , headDim] = dims(value);
      rewire(value, present);
      node('Concat', [past, value], present, { axis: 2 });
      proto.input.push(makeValueInfo(past, g.typeOf(value).dtype ?? 'float32', ['batch_size', heads, 'past_sequence_length', headDim]));
      proto.output.push(makeValueInfo(present, g.typeOf(value).dtype ?? 'float32', ['batch_size', heads, 'total_sequence_length', headDim]));
    }
  });
  if (positions) {
    const sliced = `${positions}_last`;
    rewire(positions, sliced, (n) => rotaryCone.has(n));
    proto.initializer.push(makeTensor('/kv_cache/axis1', [1], BigInt64Array.of(1n)), makeTensor('/kv_cache/end', [1], BigInt64Array.of(BigInt(Number.MAX_SAFE_INTEGER))),
      makeTensor('/kv_cache/one', [1], BigInt64Array.of(1n)), makeTensor('/kv_cache/two', [1], BigInt64Array.of(2n)));
    node('Shape', [embeds], '/kv_cache/embeds_shape');
    node('Slice', ['/kv_cache/embeds_shape', '/kv_cache/one', '/kv_cache/two'], '/kv_cache/seq');
    node('Neg', ['/kv_cache/seq'], '/kv_cache/neg_seq');
    node('Slice', [positions, '/kv_cache/neg_seq', '/kv_cache/end', '/kv_cache/axis1'], sliced);
  }
  // The mask spans past + new tokens now; stale intermediate shapes would only mislead ORT.
  const maskShape = g.typeOf(mask).shape;
  proto.input = proto.input.map((i) => (i.name === mask ? makeValueInfo(mask, g.typeOf(mask).dtype ?? 'int64', [maskShape?.[0] ?? 'batch_size', 'total_sequence_length']) : i));
  proto.valueInfo = [];
  // Concat / Slice must come after what they read: put each right after its input's producer.
  const all = [...proto.node];
  for (const n of nodes) {
    const after = Math.max(...n.input.map((i) => all.findIndex((x) => x.output.includes(i))));
    all.splice(after + 1, 0, n);
  }
  proto.node = all;
  return { layers: layers.length, positions: positions ? 'sliced' : 'input' };
}
