/**
 * Media as requests carry it (base64, `data:` URLs) → bytes, checked against the limits before the
 * request is queued, so a bad upload gets its 4xx at once and never reaches the decoder queue. Nothing
 * here reads the disk or the network: an `http:` or `file:` URL is refused, not fetched.
 */
import sharp, { type Metadata } from 'sharp';
import { fail } from '../errors.js';
import { readWav } from '../run/inputs/wav.js';
import type { Limits, ServeMessage } from './request.js';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Standard base64 (whitespace allowed, as Ollama clients wrap lines) → bytes; anything else → E_SERVE_BAD_REQUEST. */
export function decodeBase64(text: string, what: string): Uint8Array {
  const s = text.replace(/\s+/g, '');
  if (!s.length || s.length % 4 === 1 || !BASE64.test(s)) throw fail('E_SERVE_BAD_REQUEST', `${what}: not valid base64`);
  return new Uint8Array(Buffer.from(s, 'base64'));
}

/** `data:image/png;base64,…` → bytes. Other URL schemes are refused: the server fetches nothing. */
export function decodeDataUrl(url: string, what: string): Uint8Array {
  const m = /^data:([^;,]*)((?:;[^;,]*)*),(.*)$/s.exec(url);
  if (!m) throw fail('E_SERVE_BAD_REQUEST', `${what}: only data: URLs are accepted (got ${JSON.stringify(url.slice(0, 40))})`,
    { hint: 'send the image inline: data:image/png;base64,…' });
  if (!m[2]!.split(';').includes('base64')) throw fail('E_SERVE_BAD_REQUEST', `${what}: the data: URL must be base64-encoded`);
  return decodeBase64(m[3]!, what);
}

/** Checks every image's pixel count (from its header, before decoding) and every clip's length. */
export async function checkMedia(messages: readonly ServeMessage[], limits: Limits): Promise<void> {
  const count = messages.reduce((n, m) => n + m.images.length + m.audio.length, 0);
  if (count > limits.maxMedia) throw fail('E_SERVE_TOO_LARGE', `the request holds ${count} images/audio clips; at most ${limits.maxMedia} are accepted`);
  for (const m of messages) {
    for (const [i, bytes] of m.images.entries()) {
      let meta: Metadata;
      try {
        meta = await sharp(bytes, { limitInputPixels: false }).metadata();
      } catch (e) {
        throw fail('E_IMAGE', `image ${i + 1}: not a readable image (${(e as Error).message})`, { hint: 'send a PNG, JPEG, WebP, GIF, TIFF or AVIF image' }, e);
      }
      const px = (meta.width ?? 0) * (meta.height ?? 0);
      if (!px) throw fail('E_IMAGE', `image ${i + 1}: no size in its header`);
      if (px > limits.maxImagePixels)
        throw fail('E_SERVE_TOO_LARGE', `image ${i + 1} is ${meta.width}×${meta.height} = ${px} pixels; at most ${limits.maxImagePixels} are accepted`,
          { hint: 'downscale the image (or start the server with a larger --max-image-pixels)' });
    }
    for (const [i, bytes] of m.audio.entries()) {
      const wav = readWav(bytes, `audio ${i + 1}`);
      const seconds = wav.samples.length / wav.sampleRate;
      if (seconds > limits.maxAudioSeconds)
        throw fail('E_SERVE_TOO_LARGE', `audio ${i + 1} lasts ${seconds.toFixed(1)} s; at most ${limits.maxAudioSeconds} s are accepted`);
    }
  }
}
