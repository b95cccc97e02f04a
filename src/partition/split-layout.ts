/**
 * Adopting an onnx-community / transformers.js split folder as a brick set: its files already are
 * bricks with the canonical interfaces, so they are copied byte for byte (a `--dtype` suffix picks the
 * variant), and only `--split-projector` cuts anything (the projector out of the vision encoder).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../errors.js';
import type { BrickEntry, Connection } from '../formats/bricks.js';
import { DTYPE_FALLBACK, DTYPE_SUFFIXES, SPLIT_FILES, TENSOR, type BrickKind, type DtypeSuffix } from '../formats/names.js';
import { extractModel } from '../onnx/extract.js';
import { Graph, mergeTypes } from '../onnx/graph.js';
import { loadModel, type OnnxFile } from '../onnx/model-io.js';
import { inferTypes } from '../onnx/shape-infer.js';
import { copyBrick, interfaceOf, writeBrick } from './brick-files.js';
import { projectorBoundary } from './detect.js';

export interface SplitFile { readonly stem: string; readonly kind: BrickKind; readonly file: string }
export interface SplitLayout { readonly dir: string; readonly suffix: string; readonly files: readonly SplitFile[] }

/** Finds split-layout files in `dir/onnx` (or `dir`); undefined when the folder is not in that layout. */
export async function findSplitLayout(dir: string, dtype?: string): Promise<SplitLayout | undefined> {
  for (const d of [join(dir, 'onnx'), dir]) {
    const names = new Set((await readdir(d).catch(() => [] as string[])).filter((f) => f.endsWith('.onnx')));
    const stems = Object.keys(SPLIT_FILES).filter((s) => s !== 'model' || names.size === 1 || [...names].every((n) => n.startsWith('model')));
    const variants = new Map<string, SplitFile[]>();
    for (const stem of stems)
      for (const suffix of DTYPE_SUFFIXES) {
        const name = `${stem}${suffix ? `_${suffix}` : ''}.onnx`;
        if (!names.has(name)) continue;
        const list = variants.get(suffix) ?? [];
        if (!list.some((f) => f.kind === SPLIT_FILES[stem])) list.push({ stem, kind: SPLIT_FILES[stem], file: join(d, name) });
        variants.set(suffix, list);
      }
    if (!variants.size) continue;
    const isSplit = [...variants.values()].some((l) => l.some((f) => f.kind === 'decoder') && (l.length > 1 || l[0].stem !== 'model'));
    if (!isSplit && !(variants.get(dtype ?? '') ?? []).some((f) => f.kind === 'decoder' && f.stem === 'model')) continue;
    const suffix = dtype ?? '';
    if (!variants.has(suffix))
      throw fail('E_PARTITION_DTYPE', `${d}: no '${suffix || 'fp32'}' variant (available: ${[...variants.keys()].map((s) => s || "'' (fp32)").join(', ')})`,
        { hint: 'pick one with --dtype' });
    // Files a variant lacks (e.g. an fp32 embed_tokens beside q4 decoders) fall back by DTYPE_FALLBACK, as `pull` fetched them.
    const chosen = [...variants.get(suffix)!];
    for (const fb of DTYPE_FALLBACK[suffix as DtypeSuffix])
      for (const f of variants.get(fb) ?? []) if (!chosen.some((c) => c.kind === f.kind)) chosen.push(f);
    return { dir: d, suffix, files: chosen };
  }
  return undefined;
}

export interface Adopted {
  readonly bricks: BrickEntry[];
  readonly connections: Connection[];
  readonly notes: string[];
  /** When a file was cut (split projector), the original to verify the cut against. */
  readonly cutFrom?: OnnxFile;
  readonly cutOutputs?: string[];
}

export async function adoptSplitLayout(layout: SplitLayout, out: string,
  o: { splitProjector: boolean; cutProjector?: string; externalData?: number; tokenIds: { image?: number; audio?: number } }): Promise<Adopted> {
  const bricks: BrickEntry[] = [];
  const connections: Connection[] = [];
  const notes: string[] = [];
  let cutFrom: OnnxFile | undefined;
  let cutOutputs: string[] | undefined;
  const order: BrickKind[] = ['vision', 'audio', 'embed', 'decoder'];
  const files = [...layout.files].sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
  for (const f of files) {
    const src = await loadModel(f.file);
    if (f.kind === 'vision' && (o.splitProjector || o.cutProjector)) {
      const g = new Graph(src.model.graph!);
      for (const [k, v] of inferTypes(g)) g.types.set(k, mergeTypes(g.types.get(k), v));
      const io = interfaceOf(src.model);
      const input = io.inputs[0].name;
      const output = io.outputs[0].name;
      const boundary = projectorBoundary(g, { kind: 'vision', input, output }, o.cutProjector);
      const vision = extractModel(src.model, g, { graphName: 'vision', inputs: [{ name: input }], outputs: [{ name: boundary, as: TENSOR.visionHidden }] });
      const projector = extractModel(src.model, g, { graphName: 'projector', inputs: [{ name: boundary, as: TENSOR.visionHidden }], outputs: [{ name: output }] });
      bricks.push(await writeBrick(out, 'vision', 'vision', vision.model, src, o.externalData));
      bricks.push(await writeBrick(out, 'projector', 'projector', projector.model, src, o.externalData));
      connections.push({ from: `vision.${TENSOR.visionHidden}`, to: `projector.${TENSOR.visionHidden}` });
      cutFrom = src;
      cutOutputs = [output];
      continue;
    }
    bricks.push(await copyBrick(out, src, f.kind, f.kind));
  }
  const decoder = bricks.find((b) => b.kind === 'decoder');
  const embed = bricks.find((b) => b.kind === 'embed');
  if (!decoder) throw fail('E_PARTITION_INPUT', `${layout.dir}: no decoder file (decoder_model_merged*.onnx)`);
  const takesEmbeds = decoder.inputs.some((i) => i.name === TENSOR.inputsEmbeds);
  if (takesEmbeds && !embed) throw fail('E_PARTITION_INPUT', `${layout.dir}: the decoder takes inputs_embeds but there is no embed_tokens file`);
  if (takesEmbeds) connections.push({ from: `embed.${embed!.outputs[0].name}`, to: `decoder.${TENSOR.inputsEmbeds}` });
  for (const b of bricks) {
    const kind = b.kind === 'projector' ? 'vision' : b.kind;
    if ((kind !== 'vision' && kind !== 'audio') || bricks.some((x) => x.kind === 'projector') && b.kind === 'vision') continue;
    const id = o.tokenIds[kind === 'vision' ? 'image' : 'audio'];
    if (id === undefined)
      throw fail('E_PARTITION_NOT_FOUND', `config.json names no ${kind === 'vision' ? 'image_token_index' : 'audio_token_index'}; cannot tell which tokens the ${kind} features replace`,
        { hint: 'add it to config.json next to the onnx/ folder' });
    if (!takesEmbeds) throw fail('E_PARTITION_INPUT', `${layout.dir}: the decoder takes input_ids, so ${kind} features cannot be merged into it`);
    const feature = b.outputs.find((x) => /features|embeds/.test(x.name)) ?? b.outputs[0];
    connections.push({ from: `${b.name}.${feature.name}`, to: `decoder.${TENSOR.inputsEmbeds}`, merge: { placeholderTokenId: id, mode: 'replace-rows' } });
  }
  if (!takesEmbeds && bricks.length === 1) notes.push('text-only decoder taking input_ids: a one-brick model');
  return { bricks, connections, notes, cutFrom, cutOutputs };
}

