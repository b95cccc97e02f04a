/**
 * Cuts a standalone model out of a graph: the nodes between chosen inputs and outputs, only the
 * initializers they read (external tensors stay external references into the source directory until
 * `saveModel` copies them), boundary values renamed to canonical interface names.
 */
import { create } from '@bufbuild/protobuf';
import {
  GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, type FunctionProto, type ModelProto, type NodeProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { fail } from '../errors.js';
import { makeValueInfo } from './builder.js';
import type { Graph, ValueType } from './graph.js';

export interface BoundaryValue {
  /** Value name in the source graph. */
  readonly name: string;
  /** Name in the extracted model (defaults to `name`). */
  readonly as?: string;
}

export interface CutSpec {
  readonly graphName: string;
  readonly inputs: readonly BoundaryValue[];
  readonly outputs: readonly BoundaryValue[];
  /** Types for boundary values, by source name; falls back to `graph.types`. */
  readonly types?: ReadonlyMap<string, ValueType>;
}

export interface Cut {
  readonly model: ModelProto;
  readonly nodes: readonly NodeProto[];
  readonly initializers: readonly string[];
}

export function extractModel(source: ModelProto, graph: Graph, spec: CutSpec): Cut {
  const inputNames = new Set(spec.inputs.map((i) => i.name));
  const nodes = graph.cone(spec.outputs.map((o) => o.name), inputNames);
  const rename = new Map<string, string>();
  for (const b of [...spec.inputs, ...spec.outputs]) if (b.as && b.as !== b.name) rename.set(b.name, b.as);

  const produced = new Set<string>(nodes.flatMap((n) => n.output));
  const usedInits = new Set<string>();
  const missing = new Set<string>();
  for (const n of nodes)
    for (const v of graph.reads_(n)) {
      if (produced.has(v) || inputNames.has(v)) continue;
      if (graph.initializers.has(v)) usedInits.add(v);
      else missing.add(v);
    }
  for (const o of spec.outputs)
    if (!produced.has(o.name) && !inputNames.has(o.name) && !graph.initializers.has(o.name)) missing.add(o.name);
  if (missing.size)
    throw fail('E_PARTITION_CUT', `brick '${spec.graphName}' is not closed: it needs ${[...missing].slice(0, 4).map((m) => `'${m}'`).join(', ')}${missing.size > 4 ? ` and ${missing.size - 4} more` : ''} that are not among its inputs`,
      { hint: 'choose cut tensors with --cut brick=tensor so that each brick depends only on its inputs' });

  const r = (v: string): string => rename.get(v) ?? v;
  const newNodes = nodes.map((n) => rename.size && [...n.input, ...n.output].some((v) => rename.has(v))
    ? create(NodeProtoSchema, { ...n, input: n.input.map(r), output: n.output.map(r) })
    : n);
  const typed = (b: BoundaryValue): ValueInfoProto => {
    const t = spec.types?.get(b.name) ?? graph.typeOf(b.name);
    if (!t.dtype)
      throw fail('E_PARTITION_TYPE', `brick '${spec.graphName}': cannot determine the element type of boundary '${b.name}'`,
        { hint: 'pick another cut tensor with --cut, or add value_info to the model' });
    return makeValueInfo(r(b.name), t.dtype, t.shape);
  };
  const keptValueInfo = graph.proto.valueInfo.filter((v) => produced.has(v.name) && !rename.has(v.name));
  const g = create(GraphProtoSchema, {
    name: spec.graphName,
    node: newNodes,
    initializer: graph.proto.initializer.filter((t) => usedInits.has(t.name)),
    input: spec.inputs.map(typed),
    output: spec.outputs.map(typed),
    valueInfo: keptValueInfo,
    docString: graph.proto.docString,
  });
  const usedOps = new Set(nodes.map((n) => `${n.domain}::${n.opType}`));
  const functions: FunctionProto[] = source.functions.filter((f) => usedOps.has(`${f.domain}::${f.name}`));
  const model = create(ModelProtoSchema, { ...source, graph: g, functions });
  return { model, nodes, initializers: [...usedInits] };
}
