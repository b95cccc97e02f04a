/**
 * Size and cost figures for a graph or a brick: op histogram, parameters, bytes per dtype, external
 * files, and a FLOP estimate from weight shapes (labelled as an estimate wherever it is shown).
 *
 * Parameters are the elements of non-scalar floating-point and low-bit integer initializers
 * (what a checkpoint stores); int32/int64/bool initializers are indices and shapes, not parameters.
 * MatMulNBits' packed weights count their logical K×N elements.
 */
import type { NodeProto, TensorProto } from 'onnx-buf';
import { DT, dtypeName, storageBytes } from './dtype.js';
import type { Graph, ValueType } from './graph.js';
import { externalRef, tensorElementCount } from './model-io.js';

export interface GraphStats {
  readonly nodes: number;
  readonly ops: Readonly<Record<string, number>>;
  readonly params: number;
  readonly bytes: number;
  readonly bytesByDtype: Readonly<Record<string, number>>;
  readonly externalFiles: readonly string[];
}

const NOT_PARAMS = new Set<number>([DT.INT32, DT.INT64, DT.BOOL, DT.STRING, DT.UINT64, DT.UINT32, DT.INT16, DT.UINT16]);

export function isParameter(t: TensorProto): boolean {
  return !NOT_PARAMS.has(t.dataType) && t.dims.length > 0 && tensorElementCount(t) > 1;
}

export function graphStats(g: Graph, nodes: readonly NodeProto[] = g.nodes, initializers: Iterable<TensorProto> = g.initializers.values()): GraphStats {
  const ops: Record<string, number> = {};
  for (const n of nodes) {
    const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}.${n.opType}` : n.opType;
    ops[key] = (ops[key] ?? 0) + 1;
  }
  const packedLogical = new Map<string, number>();
  for (const n of nodes)
    if (n.opType === 'MatMulNBits') {
      const attr = (k: string) => Number(n.attribute.find((a) => a.name === k)?.i ?? 0);
      packedLogical.set(n.input[1], attr('K') * attr('N'));
    }
  let params = 0;
  let bytes = 0;
  const bytesByDtype: Record<string, number> = {};
  const external = new Set<string>();
  for (const t of initializers) {
    if (isParameter(t)) params += packedLogical.get(t.name) ?? tensorElementCount(t);
    if (t.dataType === DT.STRING) continue;
    const b = storageBytes(t.dataType, tensorElementCount(t));
    bytes += b;
    const name = dtypeName(t.dataType);
    bytesByDtype[name] = (bytesByDtype[name] ?? 0) + b;
    const ref = externalRef(t);
    if (ref) external.add(ref.location);
  }
  return { nodes: nodes.length, ops, params, bytes, bytesByDtype, externalFiles: [...external] };
}

/**
 * Multiply-accumulate FLOPs (2 per MAC) of MatMul/Gemm/Conv/MatMulNBits nodes. With concrete shapes
 * (an encoder at batch 1) this is per call; for a decoder, whose rows are tokens, rows default to 1 so
 * the figure is per token, weights only (attention over the KV cache grows with context and is left out).
 */
export function estimateFlops(g: Graph, nodes: readonly NodeProto[], types: ReadonlyMap<string, ValueType>, perToken: boolean): number {
  const shape = (v: string) => types.get(v)?.shape ?? g.typeOf(v).shape;
  const known = (s: readonly unknown[] | undefined): s is number[] => !!s && s.every((d) => typeof d === 'number');
  const rowsOf = (out: string, cols: number): number => {
    const s = shape(out);
    if (perToken || !known(s) || cols === 0) return 1;
    return s.reduce((a, b) => a * b, 1) / cols;
  };
  let flops = 0;
  for (const n of nodes) {
    if (n.opType === 'MatMul' || n.opType === 'Gemm') {
      const w = g.initializers.get(n.input[1]) ?? g.initializers.get(n.input[0]);
      if (w && w.dims.length === 2) {
        const [k, m] = w.dims.map(Number);
        const transB = n.opType === 'Gemm' && n.attribute.some((a) => a.name === 'transB' && a.i === 1n);
        const cols = transB ? k : m;
        flops += 2 * k * m * rowsOf(n.output[0], cols);
      } else if (!perToken) {
        const a = shape(n.input[0]);
        const out = shape(n.output[0]);
        if (known(a) && known(out) && a.length >= 2) flops += 2 * out.reduce((x, y) => x * y, 1) * a[a.length - 1];
      }
    } else if (n.opType === 'MatMulNBits') {
      const attr = (k: string) => Number(n.attribute.find((x) => x.name === k)?.i ?? 0);
      flops += 2 * attr('K') * attr('N') * rowsOf(n.output[0], attr('N'));
    } else if (n.opType === 'Conv') {
      const w = g.initializers.get(n.input[1]);
      const out = shape(n.output[0]);
      if (w && known(out)) {
        const per = w.dims.slice(1).reduce((a, d) => a * Number(d), 1);
        flops += 2 * per * out.reduce((a, b) => a * b, 1);
      }
    }
  }
  return flops;
}
