/**
 * The model checker: what a loaded ModelProto must satisfy before any stage reads it, collecting every
 * problem (as `onnx.checker` does, for the parts nanomind relies on) so that hostile or corrupt files are
 * refused with one error at intake instead of a crash deep in a stage:
 *
 * - tensors (initializers, Constant attributes, subgraphs): known element type, no negative dims, an
 *   element count that is a safe integer, and inline data exactly as long as the dims say (raw_data
 *   bytes, or entries of the typed field); external data is checked against its file by model-io.ts.
 * - graphs: every node input is defined (graph input, initializer, a node output, or the enclosing
 *   graph's values for If/Loop/Scan bodies), each value has one producer, every graph output is
 *   produced, and every node's domain (the default one too) is declared in opset_import (or is a
 *   model-local function's domain). Cycles are found by Graph's topological sort (E_ONNX_GRAPH).
 */
import { TensorProto_DataLocation, type GraphProto, type ModelProto, type TensorProto } from 'onnx-buf';
import { fail } from '../errors.js';
import { DT, dtypeInfo } from './dtype.js';

const DEFAULT_DOMAINS = new Set(['', 'ai.onnx']);

/** Every problem of `model`, one line each, naming the tensor, node or value. */
export function modelProblems(model: ModelProto): string[] {
  const problems: string[] = [];
  const domains = new Set([...model.opsetImport.map((o) => o.domain || 'ai.onnx'), ...model.functions.map((f) => f.domain)]);
  if (model.graph) graphProblems(model.graph, new Set(), domains, problems, '');
  return problems;
}

/** Throws E_ONNX_INVALID listing every problem (the message names the first). */
export function checkModel(model: ModelProto, file: string): void {
  const problems = modelProblems(model);
  if (problems.length === 0) return;
  throw fail('E_ONNX_INVALID', `${file}: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s))` : ''}`,
    { file, notes: problems, hint: 'the file is corrupt or was not written by an ONNX exporter; re-export or re-download it' });
}

function graphProblems(g: GraphProto, outer: ReadonlySet<string>, domains: ReadonlySet<string>, out: string[], where: string): void {
  const at = where ? `${where}: ` : '';
  for (const t of g.initializer) tensorProblems(t, `${at}initializer '${t.name}'`, out);
  const defined = new Set<string>([...outer, ...g.input.map((i) => i.name), ...g.initializer.map((t) => t.name)]);
  const producer = new Map<string, string>();
  g.node.forEach((n, i) => {
    for (const o of n.output) {
      if (!o) continue;
      const name = n.name || `#${i}`;
      if (producer.has(o)) out.push(`${at}value '${o}' is produced by two nodes ('${producer.get(o)}' and '${name}')`);
      else if (defined.has(o) && !outer.has(o)) out.push(`${at}node '${name}' (${n.opType}) overwrites graph input or initializer '${o}'`);
      producer.set(o, name);
    }
  });
  for (const o of producer.keys()) defined.add(o);
  g.node.forEach((n, i) => {
    const node = `${at}node '${n.name || `#${i}`}' (${n.opType})`;
    if (!domains.has(DEFAULT_DOMAINS.has(n.domain) ? 'ai.onnx' : n.domain))
      out.push(`${node}: domain '${n.domain || 'ai.onnx'}' is not declared in opset_import`);
    for (const v of n.input) if (v && !defined.has(v)) out.push(`${node}: input '${v}' is not defined by any graph input, initializer or node`);
    for (const a of n.attribute) {
      if (a.t) tensorProblems(a.t, `${node} attribute '${a.name}'`, out);
      for (const t of a.tensors) tensorProblems(t, `${node} attribute '${a.name}'`, out);
      if (a.g) graphProblems(a.g, defined, domains, out, `${node} ${a.name}`);
      for (const sg of a.graphs) graphProblems(sg, defined, domains, out, `${node} ${a.name}`);
    }
  });
  for (const o of g.output) if (!defined.has(o.name)) out.push(`${at}graph output '${o.name}' is produced by no node`);
}

/** Entries of the typed `*_data` field that hold `count` elements of `dt`, and that field's length. */
function typedEntries(t: TensorProto, count: number, bits: number): { need: number; have: number } {
  switch (t.dataType) {
    case DT.FLOAT: return { need: count, have: t.floatData.length };
    case DT.COMPLEX64: return { need: 2 * count, have: t.floatData.length };
    case DT.DOUBLE: return { need: count, have: t.doubleData.length };
    case DT.COMPLEX128: return { need: 2 * count, have: t.doubleData.length };
    case DT.INT64: return { need: count, have: t.int64Data.length };
    case DT.UINT64: case DT.UINT32: return { need: count, have: t.uint64Data.length };
    case DT.STRING: return { need: count, have: t.stringData.length };
    default: return { need: bits < 8 ? Math.ceil((count * bits) / 8) : count, have: t.int32Data.length };
  }
}

function tensorProblems(t: TensorProto, what: string, out: string[]): void {
  let bits: number;
  try {
    bits = dtypeInfo(t.dataType).bits;
  } catch {
    out.push(`${what}: unknown element type ${t.dataType}`);
    return;
  }
  const dims = t.dims.map(Number);
  const negative = dims.find((d) => d < 0);
  if (negative !== undefined) { out.push(`${what}: negative dimension ${negative} in [${dims.join(', ')}]`); return; }
  const count = dims.reduce((n, d) => n * d, 1);
  // Past 2^53 the count itself is no longer exact; no real tensor comes near (2^53 bytes = 8 PiB).
  if (!Number.isSafeInteger(count)) { out.push(`${what}: dims [${dims.join(', ')}] overflow (${count} elements)`); return; }
  const external = t.dataLocation === TensorProto_DataLocation.EXTERNAL || t.externalData.length > 0;
  if (external || count === 0) return;
  if (t.rawData.length > 0) {
    if (t.dataType === DT.STRING) { out.push(`${what}: string tensor with raw_data`); return; }
    const need = Math.ceil((count * bits) / 8);
    if (t.rawData.length !== need) out.push(`${what}: raw_data holds ${t.rawData.length} bytes, dims [${dims.join(', ')}] need ${need}`);
    return;
  }
  const { need, have } = typedEntries(t, count, bits);
  if (have === 0) out.push(`${what}: no data for its ${count} elements (dims [${dims.join(', ')}])`);
  else if (have !== need) out.push(`${what}: holds ${have} values, dims [${dims.join(', ')}] need ${need}`);
}
