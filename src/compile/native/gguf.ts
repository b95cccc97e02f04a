/**
 * GGUF writer: the native engine's packed decoder (../../formats/native-weights.ts) as a llama.cpp `qwen2` model,
 * so llama.cpp runs the very same quantized bytes (the benchmark's peer, scripts/bench-engines.mjs).
 *
 * File layout (GGUF v3, little endian; ggml/docs/gguf.md):
 *   "GGUF" · u32 version 3 · u64 tensor count · u64 KV count
 *   KV:     string key · u32 value type · value      (string = u64 byte length + UTF-8, no terminator;
 *                                                      array = u32 element type · u64 count · elements)
 *   tensor: string name · u32 n_dims · u64 ne[n_dims] (ggml order: ne[0] is the row length) · u32 ggml type ·
 *           u64 offset from the data section's start (a multiple of general.alignment)
 *   padding to general.alignment (32), then the data section.
 *
 * Weights are copied, never re-quantized: the engine's Q4 block (fp16 d, 16 bytes, element j in the low nibble of
 * qs[j], j + 16 in the high one, value (q - 8) · d) is ggml's block_q4_0 (dequantize_row_q4_0 reads it the same
 * way), and its Q8 block (fp16 d, 32 int8) is block_q8_0. The packed wqkv / wgu matrices are row-contiguous, so
 * attn_q/k/v and ffn_gate/up are byte ranges of them. qwen2 in llama.cpp requires q/k/v biases: zeros are written
 * when the model has none (adding zero changes nothing). It uses NEOX rotary (halves rotated), as the engine does.
 * Tied embeddings: without a float embedding table the lm_head rows are token_embd and output.weight is omitted
 * (llama.cpp then reuses token_embd); with one, token_embd is F32 and lm_head is output.weight.
 *
 * The tokenizer is the smallest llama.cpp accepts for a "gpt2" BPE vocabulary: the 256 byte-level symbols first
 * (so every byte, "\n" included, tokenizes), filler tokens up to the vocabulary size, one merge, and BOS/EOS as
 * control tokens at the end. It is for running token ids, not text.
 */
import { open } from 'node:fs/promises';
import { fail } from '../../errors.js';
import { LAYER_TENSORS, rowBytes, type NativeConfig } from '../../formats/native-weights.js';

export const GGUF_ALIGNMENT = 32;
const GGUF_VERSION = 3;
/** gguf_type */
const T = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9 } as const;
/** ggml_type */
export const GGML_TYPE = { F32: 0, Q4_0: 2, Q8_0: 8 } as const;
/** llama_ftype: LLAMA_FTYPE_MOSTLY_Q4_0 = 2, LLAMA_FTYPE_MOSTLY_Q8_0 = 7 */
const FILE_TYPE = { 4: 2, 8: 7 } as const;
/** llama_token_type */
const TOKEN_NORMAL = 1, TOKEN_CONTROL = 3;

type KvValue = { type: 'u32' | 'i32' | 'f32'; value: number } | { type: 'string'; value: string } | { type: 'bool'; value: boolean }
  | { type: 'strings'; value: readonly string[] } | { type: 'i32s'; value: Int32Array };

export interface GgufTensor { readonly name: string; readonly ne: readonly number[]; readonly type: number; readonly data: Uint8Array }

export interface GgufOptions {
  /** written as qwen2.context_length */
  readonly contextLength: number;
  /** RoPE base; must reproduce the config's invFreq (llama.cpp's qwen2 has no other rope scaling here). */
  readonly ropeTheta: number;
  readonly name?: string;
}

/** Everything a GGUF file holds, in order; `writeGguf` streams it to disk. */
export interface GgufFile { readonly header: Uint8Array; readonly tensors: readonly GgufTensor[]; readonly offsets: readonly number[] }

/** The byte-level BPE alphabet of GPT-2 (bytes → printable code points), so a byte-level vocabulary has all 256 bytes. */
function byteSymbols(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let n = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(keep(b) ? b : 256 + n++));
}

function tokenizerKv(vocab: number): Record<string, KvValue> {
  if (vocab < 260) throw fail('E_GGUF_UNSUPPORTED', `vocabulary of ${vocab} tokens is too small for a byte-level GGUF tokenizer (≥ 260)`);
  const bytes = byteSymbols();
  const tokens = new Array<string>(vocab);
  const types = new Int32Array(vocab).fill(TOKEN_NORMAL);
  bytes.forEach((s, i) => { tokens[i] = s; });
  const space = bytes[32]!;
  tokens[256] = space + space; // the one merge's result
  for (let i = 257; i < vocab - 2; i++) tokens[i] = `<t${i}>`;
  tokens[vocab - 2] = '<|bos|>'; tokens[vocab - 1] = '<|eos|>';
  types[vocab - 2] = TOKEN_CONTROL; types[vocab - 1] = TOKEN_CONTROL;
  return {
    'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
    'tokenizer.ggml.pre': { type: 'string', value: 'qwen2' },
    'tokenizer.ggml.tokens': { type: 'strings', value: tokens },
    'tokenizer.ggml.token_type': { type: 'i32s', value: types },
    'tokenizer.ggml.merges': { type: 'strings', value: [`${space} ${space}`] },
    'tokenizer.ggml.bos_token_id': { type: 'u32', value: vocab - 2 },
    'tokenizer.ggml.eos_token_id': { type: 'u32', value: vocab - 1 },
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: false },
  };
}

/** Grows as it is written; little-endian throughout. */
class Out {
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  at = 0;
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.at + n));
    b.set(this.buf.subarray(0, this.at));
    this.buf = b; this.dv = new DataView(b.buffer);
  }
  u32(v: number): void { this.room(4); this.dv.setUint32(this.at, v, true); this.at += 4; }
  i32(v: number): void { this.room(4); this.dv.setInt32(this.at, v, true); this.at += 4; }
  f32(v: number): void { this.room(4); this.dv.setFloat32(this.at, v, true); this.at += 4; }
  u64(v: number): void { this.room(8); this.dv.setBigUint64(this.at, BigInt(v), true); this.at += 8; }
  u8(v: number): void { this.room(1); this.buf[this.at++] = v; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.at); this.at += b.length; }
  str(s: string): void { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
  pad(align: number): void { while (this.at % align) this.u8(0); }
  done(): Uint8Array { return this.buf.slice(0, this.at); }
}

function writeKv(o: Out, key: string, v: KvValue): void {
  o.str(key);
  switch (v.type) {
    case 'u32': o.u32(T.u32); o.u32(v.value); break;
    case 'i32': o.u32(T.i32); o.i32(v.value); break;
    case 'f32': o.u32(T.f32); o.f32(v.value); break;
    case 'bool': o.u32(T.bool); o.u8(v.value ? 1 : 0); break;
    case 'string': o.u32(T.string); o.str(v.value); break;
    case 'strings': o.u32(T.array); o.u32(T.string); o.u64(v.value.length); for (const s of v.value) o.str(s); break;
    case 'i32s': o.u32(T.array); o.u32(T.i32); o.u64(v.value.length); for (const x of v.value) o.i32(x); break;
  }
}

/** The tensors of a packed native decoder under llama.cpp's qwen2 names, sharing the packed bytes. */
export function ggufTensors(c: NativeConfig, w: Uint8Array): GgufTensor[] {
  const { hidden: h, heads: H, kvHeads: KV, headDim: d, intermediate: I, vocab } = c;
  const qt = c.bits === 4 ? GGML_TYPE.Q4_0 : GGML_TYPE.Q8_0;
  const at = (off: number, bytes: number, what: string): Uint8Array => {
    if (off < 0 || off + bytes > w.byteLength) throw fail('E_GGUF_UNSUPPORTED', `native weights: ${what} is missing or out of range`);
    return w.subarray(off, off + bytes);
  };
  const f32 = (off: number, n: number, what: string) => at(off, 4 * n, what);
  const out: GgufTensor[] = [];
  const emb = c.embedOffset >= 0;
  const fo = c.layers * LAYER_TENSORS.length;
  const lmHead = at(c.offsets[fo + 1]!, vocab * rowBytes(c.bits, h), 'lm_head');
  out.push(emb ? { name: 'token_embd.weight', ne: [h, vocab], type: GGML_TYPE.F32, data: f32(c.embedOffset, vocab * h, 'embedding') }
    : { name: 'token_embd.weight', ne: [h, vocab], type: qt, data: lmHead });
  out.push({ name: 'output_norm.weight', ne: [h], type: GGML_TYPE.F32, data: f32(c.offsets[fo]!, h, 'final_norm') });
  if (emb) out.push({ name: 'output.weight', ne: [h, vocab], type: qt, data: lmHead });
  const zeros = new Uint8Array(4 * (H + 2 * KV) * d);
  for (let l = 0; l < c.layers; l++) {
    const o = (t: (typeof LAYER_TENSORS)[number]) => c.offsets[l * LAYER_TENSORS.length + LAYER_TENSORS.indexOf(t)]!;
    const rh = rowBytes(c.bits, h);
    const qkv = at(o('wqkv'), (H + 2 * KV) * d * rh, `layer ${l} wqkv`);
    const gu = at(o('wgu'), 2 * I * rh, `layer ${l} wgu`);
    const bias = c.attnBias ? f32(o('bqkv'), (H + 2 * KV) * d, `layer ${l} bqkv`) : zeros;
    const p = `blk.${l}.`;
    out.push(
      { name: `${p}attn_norm.weight`, ne: [h], type: GGML_TYPE.F32, data: f32(o('attn_norm'), h, `layer ${l} attn_norm`) },
      { name: `${p}attn_q.weight`, ne: [h, H * d], type: qt, data: qkv.subarray(0, H * d * rh) },
      { name: `${p}attn_k.weight`, ne: [h, KV * d], type: qt, data: qkv.subarray(H * d * rh, (H + KV) * d * rh) },
      { name: `${p}attn_v.weight`, ne: [h, KV * d], type: qt, data: qkv.subarray((H + KV) * d * rh) },
      { name: `${p}attn_q.bias`, ne: [H * d], type: GGML_TYPE.F32, data: bias.subarray(0, 4 * H * d) },
      { name: `${p}attn_k.bias`, ne: [KV * d], type: GGML_TYPE.F32, data: bias.subarray(4 * H * d, 4 * (H + KV) * d) },
      { name: `${p}attn_v.bias`, ne: [KV * d], type: GGML_TYPE.F32, data: bias.subarray(4 * (H + KV) * d) },
      { name: `${p}attn_output.weight`, ne: [H * d, h], type: qt, data: at(o('wo'), h * rowBytes(c.bits, H * d), `layer ${l} wo`) },
      { name: `${p}ffn_norm.weight`, ne: [h], type: GGML_TYPE.F32, data: f32(o('ffn_norm'), h, `layer ${l} ffn_norm`) },
      { name: `${p}ffn_gate.weight`, ne: [h, I], type: qt, data: gu.subarray(0, I * rh) },
      { name: `${p}ffn_up.weight`, ne: [h, I], type: qt, data: gu.subarray(I * rh) },
      { name: `${p}ffn_down.weight`, ne: [I, h], type: qt, data: at(o('wdown'), h * rowBytes(c.bits, I), `layer ${l} wdown`) },
    );
  }
  return out;
}

/** Header (magic, KV metadata, tensor infos, padding) and the tensors with their data offsets. */
export function buildGguf(c: NativeConfig, w: Uint8Array, opt: GgufOptions): GgufFile {
  const why = (msg: string) => fail('E_GGUF_UNSUPPORTED', `native ${c.family} decoder: ${msg}`, { hint: 'only Qwen2 / Llama-shaped decoders without q/k norms are written as GGUF' });
  if (c.qkNorm) throw why('q/k norms (Qwen3) are not part of llama.cpp\'s qwen2 architecture');
  if (c.heads * c.headDim !== c.hidden) throw why(`heads × head_dim (${c.heads * c.headDim}) must equal hidden (${c.hidden}) for qwen2`);
  const d = c.headDim;
  c.invFreq.forEach((f, j) => {
    const want = 1 / opt.ropeTheta ** ((2 * j) / d);
    if (Math.abs(f - want) > 1e-6 * Math.max(1, want)) throw why(`invFreq[${j}] = ${f} is not ropeTheta ${opt.ropeTheta}'s ${want} (scaled rotary)`);
  });
  const A = 'qwen2';
  const kv: Record<string, KvValue> = {
    'general.architecture': { type: 'string', value: A },
    'general.name': { type: 'string', value: opt.name ?? `nanomind ${c.family}` },
    'general.file_type': { type: 'u32', value: FILE_TYPE[c.bits] },
    'general.alignment': { type: 'u32', value: GGUF_ALIGNMENT },
    [`${A}.context_length`]: { type: 'u32', value: opt.contextLength },
    [`${A}.embedding_length`]: { type: 'u32', value: c.hidden },
    [`${A}.block_count`]: { type: 'u32', value: c.layers },
    [`${A}.feed_forward_length`]: { type: 'u32', value: c.intermediate },
    [`${A}.attention.head_count`]: { type: 'u32', value: c.heads },
    [`${A}.attention.head_count_kv`]: { type: 'u32', value: c.kvHeads },
    [`${A}.rope.freq_base`]: { type: 'f32', value: opt.ropeTheta },
    [`${A}.attention.layer_norm_rms_epsilon`]: { type: 'f32', value: c.rmsEps },
    ...tokenizerKv(c.vocab),
  };
  const tensors = ggufTensors(c, w);
  const o = new Out();
  o.bytes(new TextEncoder().encode('GGUF'));
  o.u32(GGUF_VERSION);
  o.u64(tensors.length);
  o.u64(Object.keys(kv).length);
  for (const [k, v] of Object.entries(kv)) writeKv(o, k, v);
  const offsets: number[] = [];
  let data = 0;
  for (const t of tensors) {
    o.str(t.name);
    o.u32(t.ne.length);
    for (const n of t.ne) o.u64(n);
    o.u32(t.type);
    o.u64(data);
    offsets.push(data);
    data = Math.ceil((data + t.data.byteLength) / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  }
  o.pad(GGUF_ALIGNMENT);
  return { header: o.done(), tensors, offsets };
}

/** Writes the GGUF file, streaming tensor data from the packed buffer (no second copy of the weights). */
export async function writeGguf(file: string, c: NativeConfig, w: Uint8Array, opt: GgufOptions): Promise<number> {
  const g = buildGguf(c, w, opt);
  const fh = await open(file, 'w');
  try {
    await fh.write(g.header);
    let pos = 0;
    for (const [i, t] of g.tensors.entries()) {
      if (g.offsets[i]! > pos) await fh.write(new Uint8Array(g.offsets[i]! - pos));
      await fh.write(t.data);
      pos = g.offsets[i]! + t.data.byteLength;
    }
    return g.header.byteLength + pos;
  } finally {
    await fh.close();
  }
}
