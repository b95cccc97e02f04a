/**
 * Worker-thread entry: the vision encoder of a brick set (image decode + preprocessing + the encoder
 * brick chain) on its own thread with its own ORT sessions, so that it encodes the next image while the
 * main thread decodes. Started by ./encoder-client.ts; the messages are in ./protocol.ts.
 *
 * The sessions are opened once at startup (the 'ready' message carries how long that took). Requests
 * are served one at a time, in arrival order. The ring's state machine stays on the main thread: this
 * thread only writes the slot bytes a request names, and the main thread commits the slot on the reply.
 */
import '../../util/no-telemetry.js'; // before onnxruntime-node loads: telemetry off
import { parentPort, workerData } from 'node:worker_threads';
import { fail } from '../../errors.js';
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
  // The main thread has checked the hashes already.
  const set = await openBrickSet(data.dir, { checkHashes: false, threads: data.threads });
  try {
    const enc = set.encoder(data.kind);
    const cfg = await loadImageProcessorConfig(data.dir);
    // Only the encoder chain is opened here: the decoder lives on the main thread.
    for (const b of enc.chain) await set.session(b.name);
    post({ type: 'ready', ms: performance.now() - t0 });
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
  else if (msg.type === 'close')
    queue = queue.then(async () => {
      await (await starting.catch(() => undefined))?.set.close();
      port.close();
    });
});
