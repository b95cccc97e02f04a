/**
 * Finds the bricks of a monolithic multimodal graph by dataflow, then checks the result against the
 * exporter's name scopes. It only reports cuts (boundary tensors per brick); it never edits the graph.
 *
 * - encoder (vision/audio): everything that depends only on `pixel_values` / `input_features`; its
 *   output is the float value where that region meets the text path (the projected features).
 * - embed: everything that depends only on `input_ids`, up to the float embedding rows.
 * - decoder: from the first value that closes the language model off from the encoder and `input_ids`
 *   (the merged embedding sequence) to the graph outputs.
 * - the merge in between (placeholder token id → feature rows) is recorded, not cut: the runtime does it.
 */
import type { NodeProto } from 'onnx-buf';
import { fail } from '../errors.js';
import { constantValues } from '../onnx/constants.js';
import type { BoundaryValue } from '../onnx/extract.js';
import type { Graph } from '../onnx/graph.js';
import { InputSet } from '../onnx/input-set.js';
import { SCOPES, TENSOR, type BrickKind } from '../formats/names.js';

export interface BrickCut {
  readonly name: string;
  readonly kind: BrickKind;
  readonly inputs: readonly BoundaryValue[];
  readonly outputs: readonly BoundaryValue[];
}

export interface DetectedConnection {
  readonly from: string;
  readonly to: string;
  readonly merge?: { placeholderTokenId: number; mode: 'replace-rows' };
}

export interface Detection {
  readonly bricks: readonly BrickCut[];
  readonly connections: readonly DetectedConnection[];
  readonly notes: readonly string[];
}

export type CutOverrides = Partial<Record<BrickKind, string>>;

export interface DetectOptions {
  readonly cuts?: CutOverrides;
  readonly splitProjector?: boolean;
  /** Placeholder token ids from config.json, used when the graph does not show them. */
  readonly tokenIds?: { image?: number; audio?: number };
}

interface Encoder { kind: 'vision' | 'audio'; input: string; bit: InputSet; output: string }

const FLOAT = new Set(['float32', 'float16', 'bfloat16', 'float64']);

export function detectBricks(g: Graph, opts: DetectOptions = {}): Detection {
  const cuts = opts.cuts ?? {};
  const notes: string[] = [];
  const roots = g.inputs.map((i) => i.name);
  const deps = g.dependencies(roots);
  const bitOf = (name: string): InputSet => { const i = roots.indexOf(name); return i < 0 ? InputSet.EMPTY : InputSet.of(i); };
  const depsOf = (v: string): InputSet => deps.get(v) ?? InputSet.EMPTY;
  const isFloat = (v: string): boolean => FLOAT.has(g.typeOf(v).dtype ?? '');
  for (const [kind, v] of Object.entries(cuts))
    if (!g.producer.has(v) && !roots.includes(v))
      throw fail('E_PARTITION_CUT', `--cut ${kind}=${v}: the graph has no value named '${v}'`, { hint: 'list value names with `nanomind inspect MODEL --values`' });

  const ids = roots.find((r) => r === TENSOR.inputIds) ?? roots.find((r) => /input_ids/.test(r));
  const encInputs: { kind: 'vision' | 'audio'; input: string }[] = [];
  for (const r of roots) {
    if (r === TENSOR.pixelValues || /pixel_values/.test(r)) encInputs.push({ kind: 'vision', input: r });
    else if (r === TENSOR.inputFeatures || /input_features/.test(r)) encInputs.push({ kind: 'audio', input: r });
  }
  if (!ids && encInputs.length === 0)
    throw fail('E_PARTITION_NO_BRICKS', `found no 'input_ids', 'pixel_values' or 'input_features' input (inputs: ${roots.join(', ') || 'none'})`,
      { hint: 'nanomind partitions multimodal language models; name the cut tensors with --cut brick=tensor' });

  /** Float values of a region (values depending exactly on `mask`) that leave it. */
  const frontier = (mask: InputSet): string[] => {
    const out: string[] = [];
    const graphOutputs = new Set(g.outputs.map((o) => o.name));
    for (const [v, m] of deps) {
      if (!m.equals(mask) || !isFloat(v) || !g.producer.has(v)) continue;
      const leaves = graphOutputs.has(v) || (g.consumers.get(v) ?? []).some((c) => c.output.some((o) => !depsOf(o).equals(mask)));
      if (leaves) out.push(v);
    }
    return out;
  };
  const single = (kind: BrickKind, found: string[], what: string): string => {
    if (cuts[kind]) return cuts[kind]!;
    if (found.length === 1) return found[0];
    throw fail(found.length ? 'E_PARTITION_AMBIGUOUS' : 'E_PARTITION_NOT_FOUND',
      found.length ? `${what} is ambiguous: ${found.length} candidate tensors (${found.slice(0, 4).join(', ')})` : `could not find ${what}`,
      { hint: `name it with --cut ${kind}=<tensor>`, notes: found });
  };

  const encoders: Encoder[] = encInputs.map(({ kind, input }) => ({
    kind, input, bit: bitOf(input),
    output: single(kind, frontier(bitOf(input)), `the ${kind} encoder's output (values depending only on '${input}')`),
  }));

  const bricks: BrickCut[] = [];
  const connections: DetectedConnection[] = [];
  const featureName = (kind: 'vision' | 'audio') => (kind === 'vision' ? TENSOR.imageFeatures : TENSOR.audioFeatures);
  for (const e of encoders) {
    const boundary = opts.splitProjector || cuts.projector ? projectorBoundary(g, e, cuts.projector) : undefined;
    if (boundary) {
      const hidden = e.kind === 'vision' ? TENSOR.visionHidden : TENSOR.audioHidden;
      const proj = e.kind === 'vision' ? 'projector' : 'audio_projector';
      bricks.push({ name: e.kind, kind: e.kind, inputs: [{ name: e.input }], outputs: [{ name: boundary, as: hidden }] });
      bricks.push({ name: proj, kind: 'projector', inputs: [{ name: boundary, as: hidden }], outputs: [{ name: e.output, as: featureName(e.kind) }] });
      connections.push({ from: `${e.kind}.${hidden}`, to: `${proj}.${hidden}` });
    } else {
      bricks.push({ name: e.kind, kind: e.kind, inputs: [{ name: e.input }], outputs: [{ name: e.output, as: featureName(e.kind) }] });
    }
  }
  if (!ids) return { bricks, connections, notes };

  const idsBit = bitOf(ids);
  const embedOut = single('embed', frontier(idsBit), `the token embedding (values depending only on '${ids}')`);
  bricks.push({ name: 'embed', kind: 'embed', inputs: [{ name: ids, as: TENSOR.inputIds }], outputs: [{ name: embedOut, as: TENSOR.inputsEmbeds }] });

  const encBits = encoders.reduce((m, e) => m.union(e.bit), InputSet.EMPTY);
  const closedOff = encBits.union(idsBit);
  const decoderOutputs = g.outputs.map((o) => o.name).filter((o) => depsOf(o).intersects(idsBit));
  const merged = cuts.decoder ?? findMergedEmbeds(g, deps, closedOff, encBits, idsBit, decoderOutputs, isFloat, embedOut);
  const cone = g.cone(decoderOutputs, new Set([merged]));
  const reads = new Set(cone.flatMap((n) => g.reads_(n)));
  const extraInputs = roots.filter((r) => reads.has(r) && r !== ids && !encoders.some((e) => e.input === r));
  if (roots.some((r) => reads.has(r) && (r === ids || encoders.some((e) => e.input === r))))
    throw fail('E_PARTITION_CUT', `the decoder cut at '${merged}' still reads ${roots.filter((r) => reads.has(r) && (r === ids || encoders.some((e) => e.input === r))).join(', ')}`,
      { hint: 'name the merged embedding tensor with --cut decoder=<tensor>' });
  bricks.push({
    name: 'decoder', kind: 'decoder',
    inputs: [{ name: merged, as: TENSOR.inputsEmbeds }, ...extraInputs.map((name) => ({ name }))],
    outputs: decoderOutputs.map((name) => ({ name })),
  });
  connections.push({ from: `embed.${TENSOR.inputsEmbeds}`, to: `decoder.${TENSOR.inputsEmbeds}` });

  const mergeNodes = g.cone([merged], new Set([embedOut, ...encoders.map((e) => e.output)]));
  for (const e of encoders) {
    const fromBrick = bricks.some((b) => b.name === (e.kind === 'vision' ? 'projector' : 'audio_projector'))
      ? (e.kind === 'vision' ? 'projector' : 'audio_projector') : e.kind;
    const id = placeholderId(g, deps, idsBit, mergeNodes, e, encoders.length) ?? opts.tokenIds?.[e.kind === 'vision' ? 'image' : 'audio'];
    if (id === undefined)
      throw fail('E_PARTITION_NOT_FOUND', `could not find the ${e.kind} placeholder token id in the merge (no Equal(input_ids, constant))`,
        { hint: 'put image_token_index / audio_token_index in config.json next to the model' });
    connections.push({ from: `${fromBrick}.${featureName(e.kind)}`, to: `decoder.${TENSOR.inputsEmbeds}`, merge: { placeholderTokenId: id, mode: 'replace-rows' } });
  }
  notes.push(...scopeNotes(g, bricks));
  return { bricks, connections, notes };
}

/** The earliest float value that cuts every path from the encoders and `input_ids` to the outputs. */
function findMergedEmbeds(g: Graph, deps: Map<string, InputSet>, closedOff: InputSet, encBits: InputSet, idsBit: InputSet,
  outputs: readonly string[], isFloat: (v: string) => boolean, embedOut: string): string {
  const want = encBits.union(idsBit);
  const closedInputs = new Set(g.inputs.map((i) => i.name).filter((_, i) => closedOff.has(i)));
  const candidates = g.nodes.flatMap((n) => n.output).filter((v) => v && want.isSubsetOf(deps.get(v) ?? InputSet.EMPTY) && isFloat(v));
  if (encBits.isEmpty()) candidates.unshift(embedOut);
  for (const v of candidates) {
    const cone = g.cone(outputs, new Set([v]));
    if (cone.every((n) => g.reads_(n).every((r) => !closedInputs.has(r)))) return v;
  }
  throw fail('E_PARTITION_NOT_FOUND', 'could not find where the encoder features are merged into the token embeddings',
    { hint: 'name the merged embedding tensor with --cut decoder=<tensor>' });
}

/** The constant compared with input_ids by an Equal in the merge region (the image/audio token id). */
function placeholderId(g: Graph, deps: Map<string, InputSet>, idsBit: InputSet, mergeNodes: readonly NodeProto[], e: Encoder, encoderCount: number): number | undefined {
  const equals = mergeNodes.filter((n) => n.opType === 'Equal');
  const ids = new Set<number>();
  for (const n of equals) {
    const [a, b] = n.input;
    const only = (v: string): boolean => (deps.get(v) ?? InputSet.EMPTY).equals(idsBit);
    const value = only(a) ? constantValues(g, b) : only(b) ? constantValues(g, a) : undefined;
    if (value?.length !== 1) continue;
    // With several encoders, keep the Equal whose mask meets this encoder's features downstream.
    if (encoderCount > 1 && !meets(g, n.output[0], e.output)) continue;
    ids.add(value[0]);
  }
  return ids.size === 1 ? [...ids][0] : undefined;
}

function meets(g: Graph, mask: string, features: string): boolean {
  const reach = (start: string): Set<NodeProto> => {
    const seen = new Set<NodeProto>();
    const stack = [start];
    while (stack.length) for (const c of g.consumers.get(stack.pop()!) ?? []) if (!seen.has(c)) { seen.add(c); stack.push(...c.output); }
    return seen;
  };
  const a = reach(mask);
  const b = reach(features);
  // The first common node in topological order is the merge; it must be close to both (not the decoder).
  const first = g.nodes.find((n) => a.has(n) && b.has(n));
  return first !== undefined && !/language_model|decoder/.test(first.name);
}

export function projectorBoundary(g: Graph, e: Pick<Encoder, 'kind' | 'input' | 'output'>, override: string | undefined): string {
  if (override) return override;
  const inProjector = (n: NodeProto): boolean => SCOPES.projector.some((s) => n.name.startsWith(`/${s}/`));
  const cone = g.cone([e.output], new Set([e.input]));
  const found = new Set<string>();
  for (const n of cone.filter(inProjector))
    for (const v of g.reads_(n)) {
      const p = g.producer.get(v);
      if (p && !inProjector(p) && p.opType !== 'Constant' && !g.isConstant(v)) found.add(v);
    }
  if (found.size === 1) return [...found][0];
  throw fail(found.size ? 'E_PARTITION_AMBIGUOUS' : 'E_PARTITION_NOT_FOUND',
    found.size ? `the projector input is ambiguous: ${[...found].join(', ')}` : `no '/multi_modal_projector/' scope found in the ${e.kind} encoder to cut the projector from`,
    { hint: 'name the projector input with --cut projector=<tensor>' });
}

/** Reports nodes whose exporter scope names another brick: detection and names should agree. */
function scopeNotes(g: Graph, bricks: readonly BrickCut[]): string[] {
  const notes: string[] = [];
  const scopeKind = (name: string): BrickKind | undefined => {
    const top = name.split('/')[1];
    return (Object.keys(SCOPES) as BrickKind[]).find((k) => SCOPES[k].includes(top));
  };
  for (const b of bricks) {
    const nodes = g.cone(b.outputs.map((o) => o.name), new Set(b.inputs.map((i) => i.name)));
    const foreign = nodes.filter((n) => { const k = scopeKind(n.name); return k && k !== b.kind && !(b.kind === 'vision' && k === 'projector') && !(b.kind === 'audio' && k === 'projector') && !(b.kind === 'embed' && k === 'decoder'); });
    if (foreign.length) notes.push(`brick '${b.name}' holds ${foreign.length} node(s) scoped to other bricks, e.g. '${foreign[0].name}'`);
  }
  return notes;
}
