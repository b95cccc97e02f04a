/**
 * Whether `compile` packs the decoder for the native kernels, and at which bits: the one place that decides
 * `--engine auto|native|ort` (the lift, ./lift.ts, only says whether it *can*).
 *
 * Bits follow the format the decoder is placed in (on the CPU: the stored format), so numerics never drop below
 * what the user quantized: a 4-bit format (w4a16-gN, MatMulNBits 4 bits) → Q4, anything else (fp32, fp16, w8a8,
 * w8a16) → Q8 (block 32: no coarser than any stored int8 layout). An explicit `--native-bits` wins.
 *
 * "Where it is faster" was measured, not assumed: `nanomind bench <bundle> --json --engine ort` vs `--engine native`
 * on the same bundle (target host, `--runs 5 --stream-images 0`), engines interleaved, 3 rounds, median of the
 * round medians; 2 shared EPYC cores (AVX2), load average 1.4–2.6 during the runs (* rows: 2.9–3.9):
 *
 * | decoder (bundle for host)                        | pack | prompt + new | decode tok/s ort → native | prefill tok/s ort → native | request ms ort → native |
 * |--------------------------------------------------|------|-------------:|--------------------------:|---------------------------:|------------------------:|
 * | embedded shapes-vlm, fp32 (Qwen2 128×3, vocab 398)| Q8   |  41 + 64     |  534 → 1867               |  5125 → 1719               | 170.5 → 85.0            |
 * | embedded shapes-vlm, cpu-q4 recipe (w4a16-g32)    | Q4   |  41 + 64     |  519 → 1938               |  6410 → 1571               | 163.2 → 87.7            |
 * | Qwen2.5 text fixture fp32 (64×2, vocab 328)       | Q8   |  32 + 64     | 1444 → 5630               | 43933 → 44085              |  46.9 → 11.8            |
 * | Qwen2.5 text fixture, q4 export (MatMulNBits)     | Q4   |  32 + 64     | 1217 → 4441               | 46148 → 35225              |  53.0 → 15.1            |
 * | embedded fp32                                     | Q8   | 137 + 32     |  360 → 2143               |  6608 → 13570              | 166.2 → 54.6            |
 * | embedded cpu-q4                                   | Q4   | 137 + 32     |  367 → 1298               |  8381 → 4478               | 161.1 → 78.4            |
 * | Qwen2.5 fixture fp32                              | Q8   | 128 + 32     | 1157 → 4983               | 81764 → 46703              |  28.9 → 9.0             |
 * | Qwen2.5 fixture q4                                | Q4   | 128 + 32     | 1050 → 4769               | 39654 → 50546              |  32.3 → 9.2             |
 * | generated text LM fp32 (512×8, ~25 M params)     | Q8   |  32 + 64     |   56 → 342                |   633 → 691                | 1164 → 232              |
 * | same                                              | Q8   | 128 + 32     |   57 → 294                |   887 → 611                |  684 → 320              |
 * | same, cpu-q4 recipe (AWQ, w4a16-g32) *            | Q8   |  32 + 64     |  174 → 351                |  1016 → 697                |  415 → 225              |
 * | same                                              | Q8   | 128 + 32     |  130 → 543                |   849 → 1067               |  377 → 174              |
 * | Qwen2-0.5B shape, Q4 (README, bench:engines, 2 thr.) | Q4 | 32 + 64   | 65.7 → 84.8               |   153 → 168                | —                       |
 *
 * (* load average 2.9–3.9 for the 25 M rows. Forcing Q4 there (`--native-bits 4`) decodes at 550–913 tok/s but
 * its logits drift to cosine 0.994 against ORT's 4-bit decoder: see nativeBitsFor.)
 *
 * These rows were taken while ONNX Runtime's intra-op threads still spun beside the engine (the embed brick before
 * every step, the encoders before the prefill), which is why native prefill looked slower at these sizes. Since the
 * runtime opens those bricks with spinning off (src/run/brick-set.ts), the embedded fp32 bundle, 41 + 64, 3
 * interleaved pairs on the quiet machine: prefill 21.6–24.8 k → 42.9–50.4 k tok/s, decode 1.14–1.43 k → 6.0–6.7 k
 * tok/s, request 63–81 → 25–30 ms.
 *
 * Decode is 1.3–6× faster everywhere: ORT's fixed cost per decoder call dominates a small decoder and the
 * engine has none of it; on a large one the engine streams the weights closer to the read bandwidth. The whole
 * request is 2–5× faster in every row, so the rule is: pack every decoder the lift accepts. What the lift refuses
 * (Gemma, sliding windows, MatMulNBits with zero points, the CumSum position ids of a decoder partitioned from a
 * monolithic graph without KV cache, …) stays on ORT with one compile note. Add a condition to `chooseNative` when a class of decoder
 * measures slower end to end.
 */
import { FORMAT_PATTERN } from '../../formats/quantized.js';
import type { NativeBits } from '../../formats/native-weights.js';
import type { LiftFacts } from './lift.js';

export type CompileEngine = 'auto' | 'native' | 'ort';

/**
 * Q4 for a 4-bit format, Q8 for everything else (never fewer bits than the brick already has). A 4-bit decoder
 * whose AWQ channel scales the lift had to fold into the weights gets Q8 too: the scaled rows no longer sit on the
 * 4-bit grid they were rounded to, so a Q4 repack rounds them again (measured on the generated 25 M text LM,
 * cpu-q4 recipe with AWQ: cosine of the logits against ORT's 4-bit decoder 0.994 at Q4, 0.9996 at Q8 — the same as
 * Q8 of the float decoder).
 */
export function nativeBitsFor(format: string, facts?: LiftFacts): NativeBits {
  return FORMAT_PATTERN.exec(format)?.[2] === '4' && !facts?.awqFolded ? 4 : 8;
}

/** What compile does with the decoder: try the lift (at these bits), or leave it to ORT (with a note, or silently). */
export type NativeChoice =
  | { readonly lift: true; readonly brick: string; readonly bits: NativeBits | ((facts: LiftFacts) => NativeBits); readonly bitsFrom: 'flag' | 'format' }
  | { readonly lift: false; readonly note?: string };

/**
 * The decision for one bundle: `ort` packs nothing; `auto` and `native` lift the decoder placed on the CPU
 * (backend ort-cpu) — a GPU / NPU decoder is never packed — at the explicit bits, else at its format's
 * (`nativeBitsFor`). Per the table above every decoder the lift accepts is faster on the engine, so there is no
 * further speed condition; `native` says in a note when there is nothing to pack, `auto` stays quiet then.
 */
export function chooseNative(engine: CompileEngine, bricks: readonly { name: string; kind: string; backend: string; format: string }[],
  explicitBits?: NativeBits): NativeChoice {
  if (engine === 'ort') return { lift: false };
  const dec = bricks.find((b) => b.kind === 'decoder' && b.backend === 'ort-cpu');
  if (!dec) return engine === 'native' ? { lift: false, note: '--engine native: no decoder brick is placed on the CPU; nothing packed for the native kernels' } : { lift: false };
  return explicitBits ? { lift: true, brick: dec.name, bits: explicitBits, bitsFrom: 'flag' }
    : { lift: true, brick: dec.name, bits: (facts) => nativeBitsFor(dec.format, facts), bitsFrom: 'format' };
}
