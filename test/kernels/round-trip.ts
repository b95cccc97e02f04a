// The oracle side of the native-vs-ORT comparisons: a decoder ONNX whose projection weights are replaced by their
// quantize → dequantize round trip (src/formats/native-weights.ts, the TypeScript reference, independent of the
// lift's layout), so ONNX Runtime and the engine hold the same weights and only the engine's int8 activations differ.
import { allTensors, loadModel, saveModel, tensorBytes } from '../../src/onnx/model-io.js';
import { dequantizeRows, quantizeRows, type NativeBits } from '../../src/formats/native-weights.js';

/** Every 2-D initializer a MatMul multiplies by (the projections and lm_head, [in, out]), round-tripped; returns how many. */
export async function roundTripModel(src: string, dst: string, bits: NativeBits): Promise<number> {
  const m = await loadModel(src);
  const weights = new Set(m.model.graph!.node.filter((n) => n.opType === 'MatMul').map((n) => n.input[1]!));
  let count = 0;
  for (const t of allTensors(m.model.graph!)) {
    if (!weights.has(t.name) || t.dims.length !== 2) continue;
    const [inF, outF] = t.dims.map(Number) as [number, number];
    const b = await tensorBytes(t, m.dir); // may be a Node Buffer view: copy its own bytes
    const w = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    const rows = new Float32Array(inF * outF);
    for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) rows[o * inF + i] = w[i * outF + o]!;
    const dq = dequantizeRows(bits, quantizeRows(bits, rows, outF, inF), outF, inF);
    const back = new Float32Array(inF * outF);
    for (let i = 0; i < inF; i++) for (let o = 0; o < outF; o++) back[i * outF + o] = dq[o * inF + i]!;
    t.rawData = new Uint8Array(back.buffer);
    t.floatData = [];
    t.externalData = [];
    t.dataLocation = 0;
    count++;
  }
  await saveModel(m.model, dst);
  return count;
}
