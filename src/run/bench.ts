/**
 * `nanomind bench`: how fast a brick set runs on this machine with the included runtime.
 *
 * One prompt of exactly `promptTokens` text tokens (plus the encoder's rows when the model takes an image
 * or audio clip), greedy, eos ignored so every run generates exactly `newTokens` tokens. A warm-up run
 * opens every brick session and is not counted; then `runs` measured runs, each in a reset session (no
 * reuse). Reported: medians with min/max of encoder ms, TTFT (encoders included), prefill and decode
 * tok/s, end-to-end ms and per-brick ms; peak RSS of the process.
 *
 * Each run is followed by two measurements of a second turn — the first prompt, its answer and a 16-token
 * follow-up — once continuing the session (the shared prefix comes from the KV cache) and once from
 * scratch (encoder and full prefill): the time prefix reuse saves. With a vision encoder, a stream of
 * images is answered with encoding overlapped with decoding (the TABM ring) and one after another.
 */
import { writeFile } from 'node:fs/promises';
import { cpus, arch, platform, totalmem } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { fail } from '../errors.js';
import { ChatSession, type GenerateResult } from './generation/chat-session.js';
import type { MediaKind } from './inputs/chat-template.js';
import { openModel, type RuntimeModel } from './model.js';
import { brickBackends, type RuntimeEngine } from './brick-set.js';
import { toneWav } from './inputs/wav.js';
import { peakRssMb, runImageStream } from './run.js';
import type { PowerMonitor, PowerReport } from './power/policy.js';
import { decoderThreadsBesideWorker } from './workers/encoder-client.js';
import { makeTemp, removeTemp } from '../util/temp.js';

export interface BenchOptions {
  /** Brick set or bundle folder. */
  readonly dir: string;
  readonly runs?: number;
  readonly promptTokens?: number;
  readonly newTokens?: number;
  /** An image for the vision encoder (default: a synthetic one when the model has a vision encoder). */
  readonly image?: string;
  /** A WAV clip for the audio encoder (default: a synthetic 1 s tone when the model has only audio). */
  readonly audio?: string;
  readonly threads?: number;
  /** The decoder's engine when it has a native pack (default 'auto'). */
  readonly engine?: RuntimeEngine;
  /** Images in the overlap-vs-sequential stream (default 4; 0 skips it). */
  readonly streamImages?: number;
  readonly onStage?: (stage: string) => void;
  /** The battery-aware policy: the overlapped image stream runs under it (a critical battery makes it the cascade). */
  readonly power?: PowerMonitor;
}

export interface Spread { readonly median: number; readonly min: number; readonly max: number }

export interface BenchRun {
  readonly encodeMs: number;
  readonly ttftMs: number;
  readonly prefillTokPerS: number;
  readonly decodeTokPerS: number;
  readonly totalMs: number;
  readonly promptTokens: number;
  readonly newTokens: number;
  readonly bricks: Readonly<Record<string, number>>;
}

export interface BenchResult {
  readonly machine: { readonly cpu: string; readonly cores: number; readonly memoryGb: number; readonly node: string; readonly os: string };
  readonly model: { readonly dir: string; readonly bricks: readonly string[]; readonly backends: Readonly<Record<string, string>>; readonly media: string | null };
  readonly settings: { readonly runs: number; readonly promptTokens: number; readonly newTokens: number; readonly threads: number | null };
  /** Prompt tokens as fed: text tokens + the encoder's rows. */
  readonly promptTokens: number;
  readonly encodeMs: Spread | null;
  readonly ttftMs: Spread;
  readonly prefillTokPerS: Spread;
  readonly decodeTokPerS: Spread;
  readonly totalMs: Spread;
  readonly bricks: Readonly<Record<string, Spread>>;
  readonly peakRssMb: number;
  readonly prefixReuse: {
    readonly promptTokens: number;
    readonly reusedTokens: number;
    /** TTFT of the second turn continuing the session (prefix from the KV cache). */
    readonly reusedTtftMs: Spread;
    /** TTFT of the same turn from scratch: encoders + prefill of the whole conversation. */
    readonly freshTtftMs: Spread;
    readonly savedMs: number;
  };
  /** The power policy the overlapped stream ran under: state, α and transitions (null: none given, or no image stream). */
  readonly power: PowerReport | null;
  readonly imageStream: {
    readonly images: number;
    readonly overlapImagesPerS: number;
    readonly sequentialImagesPerS: number;
    readonly speedup: number;
    /** The encoder worker's start (thread + sessions), part of the overlapped time above. */
    readonly workerStartMs: number;
    /** Overlapped rate without the worker's start: what a long stream (a camera) approaches. */
    readonly overlapSteadyImagesPerS: number;
  } | null;
  readonly runs: readonly BenchRun[];
}

const FILLER = 'The quick brown fox jumps over the lazy dog while the small board keeps running every brick of the model. ';
const FOLLOW_UP_TOKENS = 16;

export async function bench(o: BenchOptions): Promise<BenchResult> {
  const runs = o.runs ?? 5, promptTokens = o.promptTokens ?? 128, newTokens = o.newTokens ?? 32;
  for (const [name, v, min] of [['runs', runs, 1], ['promptTokens', promptTokens, 1], ['newTokens', newTokens, 1], ['streamImages', o.streamImages ?? 4, 0]] as const)
    if (!(Number.isSafeInteger(v) && v >= min)) throw fail('E_BAD_OPTION', `${name} must be an integer ≥ ${min}, got ${v}`);
  const m = await openModel(o.dir, { threads: o.threads, engine: o.engine });
  const tmp = await makeTemp('bench');
  try {
    return await measure(m, o, { runs, promptTokens, newTokens, tmp });
  } finally {
    await m.close();
    await removeTemp(tmp);
  }
}

async function measure(m: RuntimeModel, o: BenchOptions, s: { runs: number; promptTokens: number; newTokens: number; tmp: string }): Promise<BenchResult> {
  const set = m.set;
  const media = await pickMedia(m, o, s.tmp);
  const text = textIds(m, s.promptTokens + FOLLOW_UP_TOKENS);
  const prompt = text.slice(0, s.promptTokens), followUp = text.slice(s.promptTokens);
  const placeholder = media ? set.encoder(media.kind === 'image' ? 'vision' : 'audio').placeholderTokenId : undefined;

  const encode = async (): Promise<{ ms: number; features: Record<number, Float32Array>; rows: number }> => {
    if (!media || placeholder === undefined) return { ms: 0, features: {}, rows: 0 };
    const t0 = performance.now();
    const r = await set.encode(placeholder, await m.mediaInput(media.kind, { file: media.file }));
    return { ms: performance.now() - t0, features: { [placeholder]: r.features }, rows: r.rows };
  };
  // Media rows go in the middle of the text, as in a chat prompt.
  const withMedia = (rows: number): number[] => placeholder === undefined ? prompt
    : [...prompt.slice(0, prompt.length >> 1), ...Array<number>(rows).fill(placeholder), ...prompt.slice(prompt.length >> 1)];

  o.onStage?.('warm-up');
  const first = await encode();
  const ids = withMedia(first.rows);
  const need = ids.length + s.newTokens + FOLLOW_UP_TOKENS + 1;
  if (set.maxPositions !== undefined && need > set.maxPositions)
    throw fail('E_BAD_OPTION', `${ids.length} prompt tokens + ${s.newTokens} new tokens + a ${FOLLOW_UP_TOKENS}-token follow-up exceed the model's ${set.maxPositions} positions`,
      { hint: 'lower --prompt-tokens or --new-tokens' });
  const session = new ChatSession(set, { maxContext: need });
  const gen = (inputIds: readonly number[], features: Record<number, Float32Array>, maxNewTokens: number): Promise<GenerateResult> =>
    session.generate({ inputIds, features }, { maxNewTokens, stopTokenIds: [] });
  await gen(ids, first.features, s.newTokens);

  const list: BenchRun[] = [];
  const reused: number[] = [], fresh: number[] = [];
  let reusedTokens = 0, turn2Tokens = 0;
  for (let i = 0; i < s.runs; i++) {
    o.onStage?.(`run ${i + 1}/${s.runs}`);
    session.reset();
    const before = set.brickMs();
    const e = await encode();
    const r = await gen(ids, e.features, s.newTokens);
    const after = set.brickMs();
    list.push({
      encodeMs: e.ms, ttftMs: e.ms + r.stats.ttftMs, prefillTokPerS: r.stats.prefillTokPerS, decodeTokPerS: r.stats.decodeTokPerS,
      totalMs: e.ms + r.stats.totalMs, promptTokens: r.stats.promptTokens, newTokens: r.stats.newTokens,
      bricks: Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - (before[k] ?? 0)])),
    });
    // Second turn: the conversation so far plus a follow-up, continuing the session, then from scratch.
    // A random-weight model may generate a placeholder id; the answer is cut there, as a chat's
    // re-rendered text would not carry it either.
    const cut = r.tokens.findIndex((t) => t === placeholder);
    const turn2 = [...ids, ...(cut < 0 ? r.tokens : r.tokens.slice(0, cut)), ...followUp];
    const warm = await gen(turn2, e.features, 1);
    reused.push(warm.stats.ttftMs);
    reusedTokens = warm.stats.reusedTokens;
    turn2Tokens = turn2.length;
    session.reset();
    const e2 = await encode();
    fresh.push(e2.ms + (await gen(turn2, e2.features, 1)).stats.ttftMs);
  }

  let imageStream: BenchResult['imageStream'] = null;
  const streamImages = o.streamImages ?? 4;
  if (media?.kind === 'image' && streamImages > 0 && m.prompts) {
    const files = Array<string>(streamImages).fill(media.file);
    const question = m.tokenizer!.decode(prompt.slice(0, 16));
    const rates = { overlap: [] as number[], sequential: [] as number[], steady: [] as number[], start: [] as number[] };
    // As `run --images` does: unless threads were given, the overlapped decoder takes the cores the worker leaves.
    const beside = o.threads === undefined ? await openModel(o.dir, { threads: decoderThreadsBesideWorker(), engine: o.engine }) : m;
    try {
      for (let i = 0; i < Math.min(s.runs, 3); i++)
        for (const overlap of [true, false]) {
          o.onStage?.(`image stream ${overlap ? 'overlapped' : 'sequential'} ${i + 1}`);
          const r = await runImageStream(overlap ? beside : m, files, question, { overlap, maxNewTokens: s.newTokens, sampling: { temperature: 0 },
            power: overlap ? o.power : undefined });
          rates[overlap ? 'overlap' : 'sequential'].push(r.imagesPerS);
          if (overlap) {
            rates.start.push(r.encoderStartupMs ?? 0);
            rates.steady.push(streamImages / ((r.totalMs - (r.encoderStartupMs ?? 0)) / 1000));
          }
        }
    } finally {
      if (beside !== m) await beside.close();
    }
    const ov = median(rates.overlap), sq = median(rates.sequential);
    imageStream = { images: streamImages, overlapImagesPerS: ov, sequentialImagesPerS: sq, speedup: ov / sq,
      workerStartMs: median(rates.start), overlapSteadyImagesPerS: median(rates.steady) };
  }

  const pick = (k: keyof Omit<BenchRun, 'bricks'>) => spread(list.map((r) => r[k]));
  const brickNames = [...new Set(list.flatMap((r) => Object.keys(r.bricks)))].filter((k) => list.some((r) => r.bricks[k]! > 0));
  return {
    machine: machine(),
    model: { dir: set.dir, bricks: set.manifest.bricks.map((b) => b.name), backends: brickBackends(set), media: media ? `${media.kind} ${media.synthetic ? '(synthetic)' : media.file}` : null },
    settings: { runs: s.runs, promptTokens: s.promptTokens, newTokens: s.newTokens, threads: o.threads ?? null },
    promptTokens: ids.length,
    encodeMs: media ? pick('encodeMs') : null,
    ttftMs: pick('ttftMs'), prefillTokPerS: pick('prefillTokPerS'), decodeTokPerS: pick('decodeTokPerS'), totalMs: pick('totalMs'),
    bricks: Object.fromEntries(brickNames.map((k) => [k, spread(list.map((r) => r.bricks[k] ?? 0))])),
    peakRssMb: peakRssMb(),
    prefixReuse: {
      promptTokens: turn2Tokens, reusedTokens, reusedTtftMs: spread(reused), freshTtftMs: spread(fresh),
      savedMs: median(fresh) - median(reused),
    },
    imageStream,
    power: imageStream && o.power ? o.power.policy.report() : null,
    runs: list,
  };
}

export function machine(): BenchResult['machine'] {
  const c = cpus();
  return { cpu: c[0]?.model.trim() ?? 'unknown', cores: c.length, memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version, os: `${platform()} ${arch()}` };
}

export function spread(xs: readonly number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const k = s.length >> 1;
  return s.length % 2 ? s[k]! : (s[k - 1]! + s[k]!) / 2;
}

/** `n` token ids of plain text: the tokenizer on a filler paragraph, or (no tokenizer) ids that are no special token. */
function textIds(m: RuntimeModel, n: number): number[] {
  const avoid = new Set([...m.set.eosTokenIds, ...m.set.encoders.map((e) => e.placeholderTokenId)]);
  if (m.tokenizer) {
    const once = m.tokenizer.encode(FILLER, { addSpecialTokens: false });
    if (once.length) return Array.from({ length: n }, (_, i) => once[i % once.length]!);
  }
  const vocab = Math.min(m.set.decoder.vocab ?? 256, 256);
  const out: number[] = [];
  for (let t = 0; out.length < n; t++) if (!avoid.has((7 * t + 3) % vocab)) out.push((7 * t + 3) % vocab);
  return out;
}

async function pickMedia(m: RuntimeModel, o: BenchOptions, tmp: string): Promise<{ kind: MediaKind; file: string; synthetic: boolean } | undefined> {
  const has = (k: string) => m.set.encoders.some((e) => e.kind === k);
  if (o.image) { m.set.encoder('vision'); return { kind: 'image', file: o.image, synthetic: false }; }
  if (o.audio) { m.set.encoder('audio'); return { kind: 'audio', file: o.audio, synthetic: false }; }
  if (has('vision')) {
    const file = join(tmp, 'synthetic.png');
    const w = 384, px = Buffer.alloc(w * w * 3);
    for (let i = 0; i < w * w; i++) { px[3 * i] = i % w; px[3 * i + 1] = (i / w) | 0; px[3 * i + 2] = (i * 7) & 255; }
    await sharp(px, { raw: { width: w, height: w, channels: 3 } }).png().toFile(file);
    return { kind: 'image', file, synthetic: true };
  }
  if (has('audio')) {
    const file = join(tmp, 'synthetic.wav');
    await writeFile(file, toneWav(1));
    return { kind: 'audio', file, synthetic: true };
  }
  return undefined;
}
