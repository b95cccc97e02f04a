/**
 * RKNN: Rockchip's NPU runtime (librknnrt.so, rknn-toolkit2 v2.x), bound with koffi. One `RknnModel` is
 * one rknn_context over a converted `.rknn` file.
 *
 * Layouts follow Rockchip's public rknn_api.h as published in airockchip/rknn-toolkit2 (v2.x:
 * rknpu2/runtime/Linux/librknn_api/include/rknn_api.h — the version with rknn_create_mem2 and
 * RKNN_QUERY_CURRENT_NATIVE_OUTPUT_ATTR = 17). rknn_context is uint64_t (LP64). Sizes on LP64, checked by
 * test/backends/rknn.test.ts against a C double compiled from the same declarations:
 * - rknn_input_output_num {u32 n_input, n_output} = 8
 * - rknn_tensor_attr {u32 index, n_dims, dims[16]; char name[256]; u32 n_elems, size; enum fmt, type, qnt_type;
 *   i8 fl; i32 zp; f32 scale; u32 w_stride, size_with_stride; u8 pass_through; u32 h_stride} = 376
 * - rknn_tensor_mem {void* virt_addr; u64 phys_addr; i32 fd, offset; u32 size, flags; void* priv_data} = 40
 * - rknn_input {u32 index; void* buf; u32 size; u8 pass_through; enum type, fmt} = 32
 * - rknn_output {u8 want_float, is_prealloc; u32 index; void* buf; u32 size} = 24
 * - rknn_sdk_version {char api_version[256], drv_version[256]} = 512
 *
 * I/O: zero-copy (rknn_create_mem + rknn_set_io_mem, once at open; inputs are written as float16 NCHW with
 * pass_through 0 so the runtime converts and quantizes; outputs keep the model's native type) or, when
 * asked, rknn_inputs_set / rknn_outputs_get with preallocated buffers. Quantized (int8/uint8 affine)
 * outputs are dequantized here: (q − zp) · scale. No pointer leaves this module.
 */
import koffi from 'koffi';
import { loadVendorLibrary } from './vendor-lib.js';
import { fail } from '../../errors.js';
import { floatToHalf, halfToFloat } from '../../onnx/dtype.js';

export const RKNN_LIBRARY = 'librknnrt.so';

/** RKNN_SUCC and the RKNN_ERR_* codes of rknn_api.h, with what each means for a user. */
export const RKNN_ERRORS: Readonly<Record<number, string>> = {
  [-1]: 'RKNN_ERR_FAIL: execution failed',
  [-2]: 'RKNN_ERR_TIMEOUT: execution timed out',
  [-3]: 'RKNN_ERR_DEVICE_UNAVAILABLE: the NPU device is unavailable (is the rknpu driver loaded? /dev/rknpu or /dev/dri)',
  [-4]: 'RKNN_ERR_MALLOC_FAIL: memory allocation failed',
  [-5]: 'RKNN_ERR_PARAM_INVALID: a parameter is invalid',
  [-6]: 'RKNN_ERR_MODEL_INVALID: the .rknn model is invalid',
  [-7]: 'RKNN_ERR_CTX_INVALID: the context is invalid',
  [-8]: 'RKNN_ERR_INPUT_INVALID: an input is invalid',
  [-9]: 'RKNN_ERR_OUTPUT_INVALID: an output is invalid',
  [-10]: 'RKNN_ERR_DEVICE_UNMATCH: the device does not match; update the RKNN SDK and the NPU driver/firmware',
  [-11]: 'RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL: a pre-compiled model the driver cannot run',
  [-12]: 'RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION: the model’s optimization level does not fit this driver',
  [-13]: 'RKNN_ERR_TARGET_PLATFORM_UNMATCH: the model was converted for another platform (target_platform)',
};

const Q = { IN_OUT_NUM: 0, INPUT_ATTR: 1, OUTPUT_ATTR: 2, SDK_VERSION: 5 } as const;
/** rknn_tensor_type. */
export const RKNN_TYPE = { FLOAT32: 0, FLOAT16: 1, INT8: 2, UINT8: 3, INT16: 4, UINT16: 5, INT32: 6, UINT32: 7, INT64: 8, BOOL: 9, INT4: 10, BFLOAT16: 11 } as const;
const TYPE_BYTES: Readonly<Record<number, number>> = { 0: 4, 1: 2, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 8: 8, 9: 1 };
export const RKNN_FORMAT = { NCHW: 0, NHWC: 1, NC1HWC2: 2, UNDEFINED: 3 } as const;
const QNT_AFFINE = 2;

const MAX_DIMS = 16, NAME_LEN = 256;
const TensorAttr = koffi.struct('rknn_tensor_attr', {
  index: 'uint32_t', n_dims: 'uint32_t', dims: koffi.array('uint32_t', MAX_DIMS), name: koffi.array('char', NAME_LEN, 'String'),
  n_elems: 'uint32_t', size: 'uint32_t', fmt: 'int', type: 'int', qnt_type: 'int',
  fl: 'int8_t', zp: 'int32_t', scale: 'float', w_stride: 'uint32_t', size_with_stride: 'uint32_t', pass_through: 'uint8_t', h_stride: 'uint32_t',
});
const InOutNum = koffi.struct('rknn_input_output_num', { n_input: 'uint32_t', n_output: 'uint32_t' });
const TensorMem = koffi.struct('rknn_tensor_mem', {
  virt_addr: 'void *', phys_addr: 'uint64_t', fd: 'int32_t', offset: 'int32_t', size: 'uint32_t', flags: 'uint32_t', priv_data: 'void *',
});
const Input = koffi.struct('rknn_input', { index: 'uint32_t', buf: 'void *', size: 'uint32_t', pass_through: 'uint8_t', type: 'int', fmt: 'int' });
const Output = koffi.struct('rknn_output', { want_float: 'uint8_t', is_prealloc: 'uint8_t', index: 'uint32_t', buf: 'void *', size: 'uint32_t' });
const SdkVersion = koffi.struct('rknn_sdk_version', { api_version: koffi.array('char', 256, 'String'), drv_version: koffi.array('char', 256, 'String') });

/** The struct sizes this binding was declared with (the contract test compares them with C's sizeof). */
export const RKNN_STRUCT_SIZES = {
  rknn_tensor_attr: koffi.sizeof(TensorAttr), rknn_input_output_num: koffi.sizeof(InOutNum), rknn_tensor_mem: koffi.sizeof(TensorMem),
  rknn_input: koffi.sizeof(Input), rknn_output: koffi.sizeof(Output), rknn_sdk_version: koffi.sizeof(SdkVersion),
} as const;

interface Api {
  init(ctx: bigint[], model: Buffer, size: number, flag: number, extend: null): number;
  destroy(ctx: bigint): number;
  query(ctx: bigint, cmd: number, info: Buffer, size: number): number;
  setCoreMask(ctx: bigint, mask: number): number;
  inputsSet(ctx: bigint, n: number, inputs: Buffer): number;
  run(ctx: bigint, extend: null): number;
  outputsGet(ctx: bigint, n: number, outputs: Buffer, extend: null): number;
  outputsRelease(ctx: bigint, n: number, outputs: Buffer): number;
  createMem(ctx: bigint, size: number): bigint | null;
  destroyMem(ctx: bigint, mem: bigint): number;
  setIoMem(ctx: bigint, mem: bigint, attr: Buffer): number;
}

const apis = new Map<string, Api>();

/** Loads librknnrt.so (or `path`); a missing or broken library is one E_NPU_LIBRARY line naming it. */
export function loadRknn(path = process.env.NANOMIND_RKNN_LIB ?? RKNN_LIBRARY): Api {
  let api = apis.get(path);
  if (api) return api;
  const lib = loadVendorLibrary(path, 'the RKNN runtime', 'install librknnrt.so from airockchip/rknn-toolkit2 (rknpu2/runtime/Linux/librknn_api) on the board');
  const f = (decl: string) => lib.func(decl) as (...a: unknown[]) => unknown;
  const init = f('int rknn_init(_Out_ uint64_t *context, void *model, uint32_t size, uint32_t flag, void *extend)');
  const destroy = f('int rknn_destroy(uint64_t context)');
  const query = f('int rknn_query(uint64_t context, int cmd, void *info, uint32_t size)');
  const setCoreMask = f('int rknn_set_core_mask(uint64_t context, int core_mask)');
  const inputsSet = f('int rknn_inputs_set(uint64_t context, uint32_t n_inputs, void *inputs)');
  const run = f('int rknn_run(uint64_t context, void *extend)');
  const outputsGet = f('int rknn_outputs_get(uint64_t context, uint32_t n_outputs, void *outputs, void *extend)');
  const outputsRelease = f('int rknn_outputs_release(uint64_t context, uint32_t n_outputs, void *outputs)');
  const createMem = f('void *rknn_create_mem(uint64_t ctx, uint32_t size)');
  const destroyMem = f('int rknn_destroy_mem(uint64_t ctx, void *mem)');
  const setIoMem = f('int rknn_set_io_mem(uint64_t ctx, void *mem, void *attr)');
  api = {
    init: (c, m, s, fl, x) => init(c, m, s, fl, x) as number,
    destroy: (c) => destroy(c) as number,
    query: (c, cmd, info, size) => query(c, cmd, info, size) as number,
    setCoreMask: (c, m) => setCoreMask(c, m) as number,
    inputsSet: (c, n, i) => inputsSet(c, n, i) as number,
    run: (c, x) => run(c, x) as number,
    outputsGet: (c, n, o, x) => outputsGet(c, n, o, x) as number,
    outputsRelease: (c, n, o) => outputsRelease(c, n, o) as number,
    createMem: (c, s) => createMem(c, s) as bigint | null,
    destroyMem: (c, m) => destroyMem(c, m) as number,
    setIoMem: (c, m, a) => setIoMem(c, m, a) as number,
  };
  apis.set(path, api);
  return api;
}

/** RKNN_NPU_CORE_* from a plan's core mask ('0', '0_1', '0_1_2', 'auto', 'all'). */
export function coreMaskValue(mask: string): number {
  if (mask === 'auto') return 0;
  if (mask === 'all') return 0xffff;
  if (!/^[0-2](_[0-2])*$/.test(mask)) throw fail('E_BAD_OPTION', `NPU core mask '${mask}' is not auto, all or cores like 0_1_2`);
  return mask.split('_').reduce((m, c) => m | (1 << Number(c)), 0);
}

function check(rc: number, call: string, what: string): void {
  if (rc === 0) return;
  throw fail('E_RKNN_RUNTIME', `${what}: ${call} returned ${rc} (${RKNN_ERRORS[rc] ?? 'unknown RKNN error code'})`);
}

export interface RknnTensorInfo {
  readonly index: number; readonly name: string; readonly dims: readonly number[];
  readonly format: keyof typeof RKNN_FORMAT | 'unknown'; readonly type: number;
  readonly quantized: boolean; readonly zeroPoint: number; readonly scale: number;
  readonly elements: number; readonly bytes: number;
}

export interface RknnOpenOptions {
  /** From the plan's affinity (`0_1_2`); absent: the runtime's default (auto). */
  readonly coreMask?: string;
  /** true (default): rknn_create_mem + rknn_set_io_mem; false: rknn_inputs_set / rknn_outputs_get. */
  readonly zeroCopy?: boolean;
  readonly library?: string;
}

interface Attr { index: number; n_dims: number; dims: number[]; name: string; n_elems: number; size: number; fmt: number; type: number; qnt_type: number;
  fl: number; zp: number; scale: number; w_stride: number; size_with_stride: number; pass_through: number; h_stride: number }

const FORMAT_NAMES = Object.fromEntries(Object.entries(RKNN_FORMAT).map(([k, v]) => [v, k])) as Record<number, keyof typeof RKNN_FORMAT>;
const info = (a: Attr): RknnTensorInfo => ({
  index: a.index, name: a.name, dims: Array.from(a.dims.slice(0, a.n_dims)), format: FORMAT_NAMES[a.fmt] ?? 'unknown', type: a.type,
  quantized: a.qnt_type === QNT_AFFINE, zeroPoint: a.zp, scale: a.scale, elements: a.n_elems, bytes: a.size,
});

/** One rknn_context. `run` takes and returns float32 (NCHW as the ONNX brick declares). */
export class RknnModel {
  readonly inputs: readonly RknnTensorInfo[];
  readonly outputs: readonly RknnTensorInfo[];
  readonly sdk: { readonly api: string; readonly driver: string };
  private ctx: bigint | undefined;
  private readonly inMems: { mem: bigint; view: Uint16Array }[] = [];
  private readonly outMems: { mem: bigint; bytes: Uint8Array }[] = [];

  private constructor(private readonly api: Api, ctx: bigint, private readonly name: string, private readonly zeroCopy: boolean,
    ins: Attr[], outs: Attr[], sdk: { api: string; driver: string }) {
    this.ctx = ctx;
    this.inputs = ins.map(info);
    this.outputs = outs.map(info);
    this.sdk = sdk;
    if (zeroCopy) {
      try {
        for (const a of ins) {
          // We write float16 NCHW and let the runtime convert (pass_through 0), as Rockchip's zero-copy examples do.
          const attr = { ...a, type: RKNN_TYPE.FLOAT16, fmt: a.n_dims === 4 ? RKNN_FORMAT.NCHW : a.fmt, pass_through: 0 };
          const mem = this.createMem(a.n_elems * 2, `input '${a.name}'`);
          this.inMems.push({ mem, view: new Uint16Array(koffi.view(this.virt(mem), a.n_elems * 2)) });
          check(api.setIoMem(ctx, mem, this.attrBuffer(attr)), 'rknn_set_io_mem', `${name}: input '${a.name}'`);
        }
        for (const a of outs) {
          const bytes = a.n_elems * (TYPE_BYTES[a.type] ?? 4);
          const mem = this.createMem(bytes, `output '${a.name}'`);
          this.outMems.push({ mem, bytes: new Uint8Array(koffi.view(this.virt(mem), bytes)) });
          check(api.setIoMem(ctx, mem, this.attrBuffer(a)), 'rknn_set_io_mem', `${name}: output '${a.name}'`);
        }
      } catch (e) {
        this.close();
        throw e;
      }
    }
  }

  /** rknn_init from the model bytes, the attribute queries, the core mask, and the I/O memory. */
  static open(model: Uint8Array, name: string, opts: RknnOpenOptions = {}): RknnModel {
    const api = loadRknn(opts.library);
    const out: bigint[] = [0n];
    const bytes = Buffer.from(model.buffer, model.byteOffset, model.byteLength);
    check(api.init(out, bytes, bytes.length, 0, null), 'rknn_init', name);
    const ctx = BigInt(out[0]!);
    try {
      const num = Buffer.alloc(koffi.sizeof(InOutNum));
      check(api.query(ctx, Q.IN_OUT_NUM, num, num.length), 'rknn_query(RKNN_QUERY_IN_OUT_NUM)', name);
      const n = koffi.decode(num, InOutNum) as { n_input: number; n_output: number };
      const attrs = (cmd: number, count: number): Attr[] => Array.from({ length: count }, (_, i) => {
        const b = Buffer.alloc(koffi.sizeof(TensorAttr));
        b.writeUInt32LE(i, 0); // index is the one field rknn_query reads
        check(api.query(ctx, cmd, b, b.length), `rknn_query(${cmd === Q.INPUT_ATTR ? 'RKNN_QUERY_INPUT_ATTR' : 'RKNN_QUERY_OUTPUT_ATTR'})`, `${name}: tensor ${i}`);
        return koffi.decode(b, TensorAttr) as Attr;
      });
      const ins = attrs(Q.INPUT_ATTR, n.n_input), outs = attrs(Q.OUTPUT_ATTR, n.n_output);
      const v = Buffer.alloc(koffi.sizeof(SdkVersion));
      const sdk = api.query(ctx, Q.SDK_VERSION, v, v.length) === 0
        ? (({ api_version, drv_version }) => ({ api: api_version, driver: drv_version }))(koffi.decode(v, SdkVersion) as { api_version: string; drv_version: string })
        : { api: 'unknown', driver: 'unknown' };
      if (opts.coreMask !== undefined) check(api.setCoreMask(ctx, coreMaskValue(opts.coreMask)), 'rknn_set_core_mask', name);
      return new RknnModel(api, ctx, name, opts.zeroCopy ?? true, ins, outs, sdk);
    } catch (e) {
      api.destroy(ctx);
      throw e;
    }
  }

  /** One inference: inputs in input order (float32, as many values as each input holds); outputs as float32. */
  run(inputs: readonly Float32Array[]): Float32Array[] {
    const ctx = this.live();
    if (inputs.length !== this.inputs.length) throw fail('E_BRICK_FEEDS', `${this.name}: ${inputs.length} inputs for a model with ${this.inputs.length}`);
    inputs.forEach((x, i) => {
      if (x.length !== this.inputs[i]!.elements)
        throw fail('E_BRICK_FEEDS', `${this.name}: input '${this.inputs[i]!.name}' needs ${this.inputs[i]!.elements} values, got ${x.length}`);
    });
    if (this.zeroCopy) {
      inputs.forEach((x, i) => { const v = this.inMems[i]!.view; for (let j = 0; j < x.length; j++) v[j] = floatToHalf(x[j]!); });
      check(this.api.run(ctx, null), 'rknn_run', this.name);
      return this.outputs.map((o, i) => decodeOutput(o, this.outMems[i]!.bytes));
    }
    const inSize = koffi.sizeof(Input), outSize = koffi.sizeof(Output);
    const ins = Buffer.alloc(inSize * inputs.length);
    const held = inputs.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength)); // referenced until rknn_run returns
    inputs.forEach((x, i) => koffi.encode(ins, i * inSize, Input,
      { index: i, buf: koffi.address(held[i]!), size: x.byteLength, pass_through: 0, type: RKNN_TYPE.FLOAT32, fmt: this.inputs[i]!.dims.length === 4 ? RKNN_FORMAT.NCHW : RKNN_FORMAT.UNDEFINED }));
    check(this.api.inputsSet(ctx, inputs.length, ins), 'rknn_inputs_set', this.name);
    check(this.api.run(ctx, null), 'rknn_run', this.name);
    const bufs = this.outputs.map((o) => new Uint8Array(o.elements * (TYPE_BYTES[o.type] ?? 4)));
    const outs = Buffer.alloc(outSize * bufs.length);
    bufs.forEach((b, i) => koffi.encode(outs, i * outSize, Output, { want_float: 0, is_prealloc: 1, index: i, buf: koffi.address(b), size: b.byteLength }));
    check(this.api.outputsGet(ctx, bufs.length, outs, null), 'rknn_outputs_get', this.name);
    try {
      return this.outputs.map((o, i) => decodeOutput(o, bufs[i]!));
    } finally {
      check(this.api.outputsRelease(ctx, bufs.length, outs), 'rknn_outputs_release', this.name);
    }
  }

  /** Frees the I/O memory, then the context; safe to call twice. */
  close(): void {
    const ctx = this.ctx;
    if (ctx === undefined) return;
    this.ctx = undefined;
    for (const m of [...this.inMems, ...this.outMems]) this.api.destroyMem(ctx, m.mem);
    this.inMems.length = 0;
    this.outMems.length = 0;
    check(this.api.destroy(ctx), 'rknn_destroy', this.name);
  }

  private live(): bigint {
    if (this.ctx === undefined) throw fail('E_BRICK_CLOSED', `${this.name}: the RKNN context was destroyed`);
    return this.ctx;
  }

  private createMem(size: number, what: string): bigint {
    const mem = this.api.createMem(this.live(), size);
    if (!mem) throw fail('E_RKNN_RUNTIME', `${this.name}: rknn_create_mem(${size}) for ${what} returned NULL`, { hint: 'the NPU memory is exhausted, or the driver is missing' });
    return mem;
  }

  private virt(mem: bigint): bigint {
    const m = koffi.decode(mem, TensorMem) as { virt_addr: bigint | null; size: number };
    if (!m.virt_addr) throw fail('E_RKNN_RUNTIME', `${this.name}: rknn_create_mem gave memory without a CPU address`);
    return m.virt_addr;
  }

  private attrBuffer(a: Attr): Buffer {
    const b = Buffer.alloc(koffi.sizeof(TensorAttr));
    koffi.encode(b, TensorAttr, a);
    return b;
  }
}

/** Native output → float32: float32 as is, float16 widened, int8/uint8 affine dequantized ((q − zp) · scale). */
function decodeOutput(o: RknnTensorInfo, bytes: Uint8Array): Float32Array {
  const n = o.elements;
  const out = new Float32Array(n);
  const at = bytes.byteOffset;
  switch (o.type) {
    case RKNN_TYPE.FLOAT32: out.set(new Float32Array(bytes.buffer, at, n)); return out;
    case RKNN_TYPE.FLOAT16: { const h = new Uint16Array(bytes.buffer, at, n); for (let i = 0; i < n; i++) out[i] = halfToFloat(h[i]!); return out; }
    case RKNN_TYPE.INT8: case RKNN_TYPE.UINT8: {
      const q = o.type === RKNN_TYPE.INT8 ? new Int8Array(bytes.buffer, at, n) : bytes.subarray(0, n);
      const zp = o.quantized ? o.zeroPoint : 0, s = o.quantized ? o.scale : 1;
      for (let i = 0; i < n; i++) out[i] = (q[i]! - zp) * s;
      return out;
    }
    default:
      throw fail('E_RKNN_RUNTIME', `output '${o.name}' has RKNN tensor type ${o.type}, which this binding does not convert`);
  }
}
