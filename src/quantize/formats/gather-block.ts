/**
 * Embedding tables to com.microsoft GatherBlockQuantized (ORT contrib op): a Gather on axis 0 of a
 * rank-2 float initializer `[V, H]` becomes
 *
 *   GatherBlockQuantized(data uint8[V, H·bits/8], indices, scales[V, H/block], zero_points?)
 *     {bits, block_size, gather_axis: 0, quantize_axis: 1}
 *
 * with uint8 data (bits 4 packed low nibble first along H; ORT's contract for uint8 data is gather_axis 0
 * and packing along the last axis), zero points packed the same way, absent meaning 2^(bits−1) — the
 * same blocks and codes as MatMulNBits, so one quantizer serves both. H must be a multiple of the block.
 */
import type { NodeProto, TensorProto } from 'onnx-buf';
import { makeTensor } from '../../onnx/builder.js';
import { DT } from '../../onnx/dtype.js';
import { packZeroPoints, type BlockParams, type BlockQuantized } from '../block-quant.js';
import { attrInt, MS_DOMAIN, type ModelEdit } from '../edit.js';
import { floatTensor, isFloatWeight, quantizeStored } from '../tensors.js';

export interface GatherTarget { readonly node: NodeProto; readonly table: TensorProto; readonly V: number; readonly H: number }

export function gatherTargets(edit: ModelEdit, block: number): { targets: GatherTarget[]; skipped: string[] } {
  const targets: GatherTarget[] = [];
  const skipped: string[] = [];
  for (const n of edit.nodes) {
    if (n.opType !== 'Gather' || (n.domain && n.domain !== 'ai.onnx')) continue;
    const t = edit.inits.get(n.input[0]);
    if (!t || !isFloatWeight(t) || t.dims.length !== 2 || attrInt(n, 'axis', 0) !== 0 || edit.inits.has(n.input[1])) continue;
    const [V, H] = t.dims.map(Number);
    if (H % block !== 0) { skipped.push(`${t.name}: row length ${H} is not a multiple of block ${block}; kept float`); continue; }
    targets.push({ node: n, table: t, V, H });
  }
  return { targets, skipped };
}

export async function rewriteGatherBlock(edit: ModelEdit, t: GatherTarget, p: BlockParams): Promise<BlockQuantized> {
  const q = await quantizeStored(t.table, edit.dir, 'NK', t.H, t.V, p);
  const dtype = t.table.dataType === DT.FLOAT16 ? DT.FLOAT16 : DT.FLOAT;
  const base = t.table.name;
  const inputs = [
    edit.addInit(makeTensor(edit.unique(`${base}_Q${p.bits}`), [t.V, (t.H * p.bits) / 8], q.packed)),
    t.node.input[1],
    edit.addInit(floatTensor(edit.unique(`${base}_scales`), [t.V, q.kBlocks], q.scales, dtype)),
  ];
  if (!p.symmetric) inputs.push(edit.addInit(makeTensor(edit.unique(`${base}_zp`), [t.V, Math.ceil((q.kBlocks * p.bits) / 8)], packZeroPoints(q.zeroPoints, t.V, q.kBlocks, p.bits))));
  edit.replace(t.node, edit.node('GatherBlockQuantized', inputs, t.node.output,
    { bits: p.bits, block_size: p.block, gather_axis: 0, quantize_axis: 1 }, { name: `${t.node.name}_Q${p.bits}`, domain: MS_DOMAIN }));
  return q;
}

export async function toGatherBlockQuantized(edit: ModelEdit, p: BlockParams, onTensor?: (name: string) => void): Promise<{ count: number; skipped: string[] }> {
  const { targets, skipped } = gatherTargets(edit, p.block);
  for (const t of targets) { onTensor?.(t.table.name); await rewriteGatherBlock(edit, t, p); }
  return { count: targets.length, skipped };
}
