/**
 * Rockchip NPU lowering, the last, target-specific step of compile:
 * - an RKNN-ready ONNX per NPU brick: batch and every other dim fixed (the NPU runs static shapes),
 *   int64 graph inputs taken as int32 and cast inside (the NPU has no int64), opset ≤ the toolchain's;
 * - a calibration list (`dataset.txt` of .npy files, the format rknn.build(dataset=…) reads);
 * - `convert_rknn.py` for rknn-toolkit2: RKNN() → config(target_platform, quantized_dtype, …) →
 *   load_onnx(model, inputs, input_size_list) → build(do_quantization, dataset) → export_rknn(path);
 * - `convert_rkllm.py` for a decoder placed on the NPU through RKLLM (converted from the Hugging Face
 *   checkpoint by rkllm-toolkit, not from ONNX).
 * When `python3 -c "import rknn.api"` works here, compile runs the conversion and ships the .rknn files.
 */
import { join } from 'node:path';
import { execa } from 'execa';
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, TensorProto_DataType as DT, type ModelProto, type NodeProto, type ValueInfoProto } from 'onnx-buf';
import { fail } from '../errors.js';
import type { TensorSpec } from '../formats/bricks.js';
import { makeAttribute, makeValueInfo } from '../onnx/builder.js';
import { loadModel, saveModel } from '../onnx/model-io.js';
import type { BrickInfo } from './analyze.js';

export interface RknnBrick {
  readonly brick: string;
  readonly onnx: string;
  readonly rknn: string;
  readonly quantize: boolean;
  readonly dataset?: string;
  readonly inputs: readonly { readonly name: string; readonly shape: readonly number[] }[];
}

/** The tensor's static shape: as analyzed from the configs (an encoder's image size) when known, else its own dims. */
const staticShape = (t: TensorSpec, what: string, b?: BrickInfo): number[] => b?.staticShapes?.[t.name] ? [...b.staticShapes[t.name]!] : (t.shape ?? []).map((d) => {
  if (typeof d === 'number') return d;
  if (typeof d === 'string' && /batch/i.test(d)) return 1;
  throw fail('E_RKNN_SHAPE', `${what}: dim ${JSON.stringify(d)} of '${t.name}' has no static value`, { hint: 'the NPU needs static shapes; keep this brick off it with --place' });
});

/** Writes `<stem>.rknn.onnx`: static shapes, int32 instead of int64 inputs. Returns its file name. */
export async function writeRknnOnnx(srcDir: string, b: BrickInfo, outDir: string, maxOpset: number): Promise<{ file: string; inputs: RknnBrick['inputs'] }> {
  const loaded = await loadModel(join(srcDir, b.entry.file));
  const model: ModelProto = structuredClone(loaded.model);
  const opset = Number(model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 0);
  if (opset > maxOpset) throw fail('E_RKNN_OPSET', `brick '${b.entry.name}': opset ${opset} > ${maxOpset}, the highest rknn-toolkit2 reads`, { hint: 're-export the model at a lower opset' });
  const g = model.graph!;
  const inputs = b.entry.inputs.map((t) => ({ name: t.name, shape: staticShape(t, `brick '${b.entry.name}'`, b) }));
  const casts: NodeProto[] = [];
  g.input = g.input.map((vi): ValueInfoProto => {
    const spec = b.entry.inputs.find((t) => t.name === vi.name);
    if (!spec) return vi;
    const shape = staticShape(spec, `brick '${b.entry.name}'`, b);
    if (spec.dtype !== 'int64') return makeValueInfo(vi.name, spec.dtype as never, shape);
    // Rename the int32 feed and cast it back, so every consumer inside still sees the int64 name.
    const feed = `${vi.name}_int32`;
    casts.push(create(NodeProtoSchema, { name: `nanomind_cast_${vi.name}`, opType: 'Cast', input: [feed], output: [vi.name], attribute: [makeAttribute('to', DT.INT64)] }));
    return makeValueInfo(feed, 'int32', shape);
  });
  g.node = [...casts, ...g.node];
  g.output = g.output.map((vi) => {
    const spec = b.entry.outputs.find((t) => t.name === vi.name);
    return spec ? makeValueInfo(vi.name, spec.dtype as never, staticShape(spec, `brick '${b.entry.name}'`, b)) : vi;
  });
  const file = b.entry.file.replace(/\.onnx$/, '') + '.rknn.onnx';
  await saveModel(model, join(outDir, file), { sourceDir: loaded.dir });
  return { file, inputs: inputs.map((x) => ({ name: b.entry.inputs.find((t) => t.name === x.name)!.dtype === 'int64' ? `${x.name}_int32` : x.name, shape: x.shape })) };
}

export function convertRknnScript(target: string, bricks: readonly RknnBrick[]): string {
  const rows = bricks.map((b) => `    (${py(b.brick)}, ${py(b.onnx)}, ${py(b.rknn)}, ${b.quantize ? 'True' : 'False'}, ${b.dataset ? py(b.dataset) : 'None'}, ${JSON.stringify(b.inputs.map((i) => i.name))}, ${JSON.stringify(b.inputs.map((i) => i.shape))}),`);
  return `#!/usr/bin/env python3
"""Converts this bundle's NPU bricks to .rknn with rknn-toolkit2 (x86-64 Linux, \`pip install rknn-toolkit2\`).
Written by \`nanomind compile --target ${target}\`. Run it from the bundle directory:  python3 convert_rknn.py
Inputs arrive already preprocessed (normalized float tensors) from the nanomind runtime, so no mean/std is set.
"""
import sys
from rknn.api import RKNN

TARGET = ${py(target)}
BRICKS = [  # name, static-shape ONNX, output, quantize to w8a8, calibration list, inputs, input sizes
${rows.join('\n')}
]


def convert(name, onnx, out, quantize, dataset, inputs, sizes):
    rknn = RKNN(verbose=False)
    try:
        if rknn.config(target_platform=TARGET, quantized_dtype="w8a8", quantized_algorithm="normal",
                       quantized_method="channel", optimization_level=3) != 0:
            sys.exit(f"{name}: rknn.config failed")
        if rknn.load_onnx(model=onnx, inputs=inputs, input_size_list=sizes) != 0:
            sys.exit(f"{name}: rknn.load_onnx failed")
        if rknn.build(do_quantization=quantize, dataset=dataset) != 0:
            sys.exit(f"{name}: rknn.build failed")
        if rknn.export_rknn(out) != 0:
            sys.exit(f"{name}: rknn.export_rknn failed")
        print(f"{name}: wrote {out}")
    finally:
        rknn.release()


if __name__ == "__main__":
    for row in BRICKS:
        convert(*row)
`;
}

export function convertRkllmScript(target: string, brick: string, format: string, maxContext: number, npuCores: number): string {
  const dtype = format === 'w8a8' ? 'w8a8' : format.replace('-g', '_g');
  return `#!/usr/bin/env python3
"""Builds the ${brick} brick for the ${target} NPU with rkllm-toolkit (RKLLM converts the Hugging Face checkpoint,
not the ONNX brick). Written by \`nanomind compile\`.   python3 convert_rkllm.py <hf-model-dir> [calibration.json]
"""
import sys
from rkllm.api import RKLLM

model_dir = sys.argv[1]
dataset = sys.argv[2] if len(sys.argv) > 2 else None
llm = RKLLM()
if llm.load_huggingface(model=model_dir, device="cpu") != 0:
    sys.exit("load_huggingface failed")
if llm.build(do_quantization=True, quantized_dtype=${py(dtype)}, target_platform=${py(target)},
             num_npu_core=${npuCores}, dataset=dataset, max_context=${maxContext}) != 0:
    sys.exit("build failed")
if llm.export_rkllm(${py(brick + '.rkllm')}) != 0:
    sys.exit("export_rkllm failed")
`;
}

const py = (s: string) => JSON.stringify(s);

/** Whether rknn-toolkit2 imports here; never throws. */
export async function probeRknnToolkit(): Promise<{ ok: boolean; reason?: string }> {
  try {
    const r = await execa('python3', ['-c', 'import rknn.api'], { reject: false, timeout: 60_000 });
    return r.exitCode === 0 ? { ok: true } : { ok: false, reason: (r.stderr || `exit ${r.exitCode}`).trim().split('\n').pop() };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

export async function runRknnConversion(dir: string): Promise<void> {
  const r = await execa('python3', ['convert_rknn.py'], { cwd: dir, reject: false, all: true });
  if (r.exitCode !== 0) throw fail('E_RKNN_CONVERT', `rknn-toolkit2 conversion failed (exit ${r.exitCode})`, { notes: String(r.all ?? '').split('\n').slice(-20) });
}
