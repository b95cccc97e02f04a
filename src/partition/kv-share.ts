/**
 * Whether a decoder brick's KV cache can live in one max-length buffer per past/present pair, which the
 * runtime then feeds as `past_key_values.{i}.*` and binds as the preallocated `present.{i}.*` output
 * (see run/generation/kv-cache.ts). Written to bricks.json as the decoder's `kvCache`.
 *
 * That is only sound when com.microsoft GroupQueryAttention is the one thing that touches the cache:
 * GQA sees past and present at the same address (ORT's `past_present_share_buffer`), writes the new
 * rows at `seqlens_k` and reads no further, and takes the lengths from the attention mask (`seqlens_k`,
 * `total_sequence_length`), so a buffer longer than the context changes nothing. Any other reader of a
 * past input (a Shape for positions, a Concat, a Cast to another precision) would see the whole
 * max-length buffer, so one such layer makes the brick 'concat'. Exports that pass: onnxruntime-genai's
 * model builder and build_gemma.py (both feed the past inputs straight into GQA inputs 3/4 and name its
 * outputs 1/2 `present.{i}.*`; the mask subgraph is ReduceSum/Sub/Shape/Gather on attention_mask).
 */
import type { KvCacheMode } from '../formats/bricks.js';
import type { Graph } from '../onnx/graph.js';

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const MASK = 'attention_mask';

/** undefined: the graph has no KV-cache inputs. */
export function kvCacheMode(g: Graph): KvCacheMode | undefined {
  const past = g.inputs.map((i) => i.name).filter((n) => PAST.test(n));
  if (past.length === 0) return undefined;
  const outputs = new Set(g.outputs.map((o) => o.name));
  if (!g.inputs.some((i) => i.name === MASK)) return 'concat';
  const layers = new Set(past.map((n) => PAST.exec(n)![1]!));
  for (const i of layers) {
    const key = `past_key_values.${i}.key`, value = `past_key_values.${i}.value`;
    const readers = [...(g.consumers.get(key) ?? []), ...(g.consumers.get(value) ?? [])];
    const gqa = readers[0];
    if (!gqa || readers.some((n) => n !== gqa) || gqa.opType !== 'GroupQueryAttention' || gqa.domain !== 'com.microsoft') return 'concat';
    if (gqa.input[3] !== key || gqa.input[4] !== value) return 'concat';
    const [, pk, pv] = gqa.output;
    if (pk !== `present.${i}.key` || pv !== `present.${i}.value` || !outputs.has(pk) || !outputs.has(pv)) return 'concat';
    // Another reader of present would see the whole buffer.
    if (g.consumers.get(pk)?.length || g.consumers.get(pv)?.length) return 'concat';
    // The lengths must come from the mask, not from any tensor's length.
    const lengths = [gqa.input[5], gqa.input[6]];
    if (lengths.some((v) => !v)) return 'concat';
    const cone = g.cone(lengths as string[]);
    const reads = new Set(cone.flatMap((n) => g.reads_(n)));
    if (!reads.has(MASK) || [...reads].some((v) => PAST.test(v) || v === 'input_ids' || v === 'inputs_embeds')) return 'concat';
  }
  return 'shared-buffer';
}
