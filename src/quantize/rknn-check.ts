/**
 * What an NPU-targeted brick (w8a8, fp16 vision) must satisfy for rknn-toolkit2 to load it:
 * hard rules — only standard-domain ops (no com.microsoft), default opset ≤ 19 (the newest the
 * toolkit reads, "ONNX opset version is 19" in RKNN-Toolkit2_OP_Support-1.6.0.md), no int64 graph
 * inputs (the NPU takes float/int8/uint8 tensors); and as notes, ops that document lists as
 * "Not Supported" (the toolkit then falls back to CPU or refuses, depending on version).
 */
import type { ModelProto } from 'onnx-buf';
import { DT } from '../onnx/dtype.js';

/** Source: rockchip-linux/rknn-toolkit2 doc/RKNN-Toolkit2_OP_Support-1.6.0.md (ops marked "Not Supported", subset we may emit or meet). */
const RKNN_UNSUPPORTED = new Set([
  'Abs', 'And', 'CumSum', 'Erf', 'Expand', 'GatherElements', 'GatherND', 'LayerNormalization', 'Log', 'Neg', 'Not', 'Or',
  'Range', 'Reciprocal', 'Round', 'Floor', 'Ceil', 'Einsum', 'GroupNormalization', 'Mod', 'NonZero', 'OneHot', 'TopK',
  'Trilu', 'Sum', 'Mean', 'ScatterElements', 'Loop', 'Scan', 'Sign', 'Tan', 'Xor', 'MatMulInteger', 'QLinearMatMul', 'QLinearConv',
]);

export interface RknnCheck {
  readonly ok: boolean;
  readonly opset: number;
  /** Hard-rule violations. */
  readonly problems: readonly string[];
  /** Ops the toolkit's op list marks unsupported (informational). */
  readonly unsupportedOps: readonly string[];
}

export function checkRknn(model: ModelProto): RknnCheck {
  const g = model.graph!;
  const problems: string[] = [];
  const opset = Number(model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 0);
  if (opset > 19) problems.push(`opset ${opset} > 19`);
  const foreign = model.opsetImport.filter((o) => o.domain && o.domain !== 'ai.onnx').map((o) => o.domain);
  const nodes = [...g.node];
  const customOps = [...new Set(nodes.filter((n) => n.domain && n.domain !== 'ai.onnx').map((n) => `${n.domain}.${n.opType}`))];
  if (customOps.length) problems.push(`non-standard ops: ${customOps.join(', ')}`);
  else if (foreign.length) problems.push(`imports non-standard opsets: ${foreign.join(', ')}`);
  const inits = new Set(g.initializer.map((t) => t.name));
  for (const i of g.input) {
    if (inits.has(i.name)) continue;
    const t = i.type?.value.case === 'tensorType' ? i.type.value.value.elemType : 0;
    if (t === DT.INT64) problems.push(`graph input '${i.name}' is int64`);
  }
  const unsupportedOps = [...new Set(nodes.filter((n) => !n.domain && RKNN_UNSUPPORTED.has(n.opType)).map((n) => n.opType))].sort();
  return { ok: problems.length === 0, opset, problems, unsupportedOps };
}
