/**
 * Worker-thread entry: the vision encoder of a brick set (image decode + preprocessing + the encoder
 * brick chain) on its own thread with its own ORT sessions, so that it encodes the next image while the
 * main thread decodes. Started by ./encoder-client.ts; the messages are in ./protocol.ts.
 *
 * The sessions are opened once at startup (the 'ready' message carries how long that took). Requests
 * are served one at a time, in arrival order. An 'encode' names a region of an attached buffer (or gets
 * the rows back); a 'stream' hands over a TABM ring: this thread then claims, fills and commits one slot
 * per image itself (./../buffers/ring-buffer.ts), waiting while the decoder holds every slot.
 */
import '../../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import { parentPort, workerData } from 'node:worker_threads';
import { fail } from '../../errors.js';
import { TokenRingBuffer } from '../buffers/ring-buffer.js';
import { pinThread, threadAffinity } from '../affinity.js';
import { openBrickSet, type BrickSet, type EncoderRole } from '../brick-set.js';
import { tensor } from '../feeds.js';
import { loadImageProcessorConfig, preprocessImage, type ImageProcessorConfig } from '../inputs/image.js';
import { toWire, type EncoderWorkerData, type FromWorker, type ToWorker } from './protocol.js';

if (!parentPort) throw new Error('encoder-worker.js runs as a worker thread (see encoder-client.ts)');
const port = parentPort;
const data = workerData as EncoderWorkerData;
const post = (msg: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

interface Ready { readonly set: BrickSet; readonly enc: EncoderRole; readonly cfg: ImageProcessorConfig }

async function start(): Promise<Ready> {
  const t0 = performance.now();
  // Pinned before any session exists: ORT's intra-op threads are created with the sessions and inherit the mask.
  if (data.cpus) pinThread(data.cpus);
  const cpus = process.platform === 'linux' ? threadAffinity() : null;
  // The main thread has checked the hashes already.
  const set = await openBrickSet(data.dir, { checkHashes: false, threads: data.threads });
  try {
    const enc = set.encoder(data.kind);
    const cfg = await loadImageProcessorConfig(data.dir);
    // Only the encoder chain is opened here: the decoder lives on the main thread.
    for (const b of enc.chain) await set.session(b.name);
    post({ type: 'ready', ms: performance.now() - t0, cpus });
    return { set, enc, cfg };
  } catch (e) {
    await set.close();
    throw e;
  }
}

async function encode(r: Ready, buffer: SharedArrayBuffer | undefined, msg: Extract<ToWorker, { type: 'encode' }>): Promise<void> {
  try {
    const px = await preprocessImage(msg.file, r.cfg);
    const out = await r.set.encode(r.enc.placeholderTokenId, tensor('float32', px.data, px.dims));
    const reply = { type: 'encoded', id: msg.id, rows: out.rows, dims: out.dims, ms: out.ms } as const;
    if (msg.byteOffset === undefined) {
      const features = out.features.slice();
      post({ ...reply, features }, [features.buffer]);
      return;
    }
    if (!buffer) throw fail('E_WORKER', 'the encoder worker was asked to fill a ring slot before any ring was attached');
    if (out.features.byteLength > (msg.byteLength ?? 0))
      throw fail('E_TABM_OVERFLOW', `${msg.file}: ${out.rows} feature rows (${out.features.byteLength} bytes) do not fit a ${msg.byteLength}-byte slot`,
        { file: msg.file, hint: 'every image of a stream must give the same number of feature rows' });
    // One copy: onnxruntime-node rejects typed arrays over a SharedArrayBuffer as inputs and as
    // preallocated outputs, so ORT cannot write into the shared slot itself (see ort-cpu.ts).
    new Float32Array(buffer, msg.byteOffset, out.features.length).set(out.features);
    post(reply);
  } catch (e) {
    post({ type: 'failed', id: msg.id, error: toWire(e) });
  }
}

/** Slot meta `numbers` a streamed image carries: encoder ms, ms and bytes of the copy into the slot. */
async function streamInto(r: Ready, msg: Extract<ToWorker, { type: 'stream' }>): Promise<void> {
  const ring = TokenRingBuffer.open(msg.ring);
  try {
    for (const file of msg.files) {
      // Claim first: with every slot held by the decoder this waits (back-pressure) before encoding more.
      const lease = await ring.acquireWrite();
      try {
        const px = await preprocessImage(file, r.cfg);
        const out = await r.set.encode(r.enc.placeholderTokenId, tensor('float32', px.data, px.dims));
        if (out.features.byteLength > lease.byteLength)
          throw fail('E_TABM_OVERFLOW', `${file}: ${out.rows} feature rows (${out.features.byteLength} bytes) do not fit a ${lease.byteLength}-byte slot`,
            { file, hint: 'every image of a stream must give the rows the plan sized the ring for' });
        // The one copy of the hand-off: onnxruntime-node rejects SharedArrayBuffer-backed tensors, so ORT
        // cannot write into the slot itself (see ort-cpu.ts).
        const t0 = performance.now();
        lease.view('float32', out.features.length).set(out.features);
        const copyMs = performance.now() - t0;
        lease.commit({ tokens: out.rows, dims: out.dims, dtype: 'float32', numbers: [out.ms, copyMs, out.features.byteLength] });
      } catch (e) {
        lease.abort();
        throw e;
      }
    }
    post({ type: 'streamed', id: msg.id, count: msg.files.length });
  } catch (e) {
    post({ type: 'failed', id: msg.id, error: toWire(e) });
    // Wakes the decoder if it waits for an image that will never come; it then reads the error above.
    ring.close(`the encoder worker stopped: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const starting = start();
let buffer: SharedArrayBuffer | undefined;
let queue: Promise<unknown> = starting.catch((e) => {
  post({ type: 'startup-failed', error: toWire(e) });
  port.close();
});

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'attach') buffer = msg.buffer;
  else if (msg.type === 'encode')
    queue = queue.then(async () => {
      const r = await starting.catch(() => undefined);
      if (r) await encode(r, buffer, msg);
    });
  else if (msg.type === 'stream')
    queue = queue.then(async () => {
      const r = await starting.catch(() => undefined);
      if (r) await streamInto(r, msg);
    });
  else if (msg.type === 'close')
    queue = queue.then(async () => {
      await (await starting.catch(() => undefined))?.set.close();
      port.close();
    });
});
