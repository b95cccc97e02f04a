/**
 * The HTTP layer of `nanomind serve` (Node's built-in http): routing, auth, body limits, and the one
 * generation flow every API shape shares — parse (adapter) → check media → queue (Slots) → answer whole
 * or streamed (adapter framing). It translates only; generation belongs to Slots.
 *
 * Safety: 127.0.0.1 by default; another address needs an API key (Bearer) or an explicit `noAuth`.
 * Requests carry media inline and the server reads no path a request names. A client that disconnects
 * aborts its task (dropped from the queue, or stopped after the current token). `close()` stops
 * accepting, cancels the queue, lets the running answer finish (aborting it after a grace period).
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { fail } from '../errors.js';
import type { RuntimeModel } from '../run/model.js';
import { httpError, type GenerationAdapter, type HttpError } from './adapter.js';
import { checkMedia } from './media.js';
import { Metrics, type Outcome } from './metrics.js';
import { ServePower } from './power.js';
import { powerMonitor, thresholdsFrom, type PowerMonitor } from '../run/power/policy.js';
import { ollamaChat, ollamaError, ollamaGenerate, ollamaModel } from './ollama.js';
import { openaiChat, openaiError, openaiModels } from './openai.js';
import { CHAT_PAGE } from './page.js';
import { DEFAULT_LIMITS, type Limits, type ServeResult } from './request.js';
import { Slots } from './slots.js';

export interface ServeOptions {
  /** The name clients use for the model (`model` in requests). */
  readonly modelId: string;
  readonly host?: string;
  /** 0: any free port. */
  readonly port?: number;
  readonly apiKey?: string;
  /** Allow a non-loopback address without an API key. */
  readonly noAuth?: boolean;
  readonly maxQueue?: number;
  readonly maxContext?: number;
  readonly cacheSlots?: number;
  readonly limits?: Partial<Limits>;
  /** One line per request (text, or JSON with `jsonLog`); default: none. */
  readonly log?: (line: string) => void;
  readonly jsonLog?: boolean;
  readonly version: string;
  /**
   * The battery the power policy reads (default: /sys/class/power_supply with plan.json's thresholds,
   * compile's defaults for a brick set) and the decoder's full thread count it scales (default: all cores).
   */
  readonly power?: PowerMonitor;
  readonly decoderThreads?: number;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly slots: Slots;
  readonly metrics: Metrics;
  /** Graceful stop: refuse new requests, cancel queued ones, let the running one finish for up to `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

const LOOPBACK = (host: string) => host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

/** Refuses a non-loopback address without an API key or an explicit noAuth (before a model is even opened). */
export function checkBind(o: Pick<ServeOptions, 'host' | 'apiKey' | 'noAuth'>): void {
  const host = o.host ?? '127.0.0.1';
  if (!LOOPBACK(host) && !o.apiKey && !o.noAuth)
    throw fail('E_SERVE_UNSAFE', `binding ${host} would let anyone on the network use the model`, { hint: 'pass --api-key KEY (clients send Authorization: Bearer KEY), or --no-auth if that is intended' });
}

export async function startServer(model: RuntimeModel, o: ServeOptions): Promise<RunningServer> {
  const host = o.host ?? '127.0.0.1';
  checkBind(o);
  if (!model.tokenizer || !model.prompts) throw fail('E_TOKENIZER', `${model.dir}: no tokenizer.json / chat template: the server takes text prompts`);
  if (model.set.seq2seq) throw fail('E_USAGE', `${model.dir}: a speech-to-text (encoder-decoder) model does not chat`);
  const limits: Limits = { ...DEFAULT_LIMITS, ...o.limits };
  const power = new ServePower(o.power ?? powerMonitor({ thresholds: thresholdsFrom(model.bundle?.plan.powerPolicy) }), model, { baseThreads: o.decoderThreads });
  await power.sample(); // the state before the first request, for /health and /metrics
  const slots = new Slots(model, { maxQueue: o.maxQueue ?? 16, maxContext: o.maxContext, cacheSlots: o.cacheSlots, power });
  const metrics = new Metrics(() => ({ queue: slots.queued, busy: slots.busy, power: power.report() }));
  const created = Math.floor(Date.now() / 1000);
  const modifiedAt = new Date().toISOString();
  const described = ollamaModel(o.modelId, model, modifiedAt);
  const keyHash = o.apiKey ? createHash('sha256').update(o.apiKey).digest() : undefined;
  const running = new Set<AbortController>();
  let stopping = false;

  const authorized = (req: IncomingMessage): boolean => {
    if (!keyHash) return true;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    return !!m && timingSafeEqual(createHash('sha256').update(m[1]!.trim()).digest(), keyHash);
  };

  const log = (fields: Record<string, unknown>) => {
    if (!o.log) return;
    o.log(o.jsonLog ? JSON.stringify({ time: new Date().toISOString(), ...fields })
      : `${fields.method} ${fields.path} ${fields.status} ${Number(fields.ms).toFixed(0)} ms${fields.completionTokens !== undefined ? ` · ${fields.promptTokens} prompt (${fields.cachedTokens} cached) + ${fields.completionTokens} tokens · queue ${Number(fields.queueMs).toFixed(0)} ms · ${fields.stopReason}` : ''}${fields.error ? ` · ${fields.error}` : ''}`);
  };

  const sendJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  /** The body as JSON, refusing more than maxBodyBytes before reading it all. */
  const readJson = async (req: IncomingMessage): Promise<unknown> => {
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = () => fail('E_SERVE_TOO_LARGE', `the request body is over ${limits.maxBodyBytes} bytes`, { hint: 'send smaller images or start the server with a larger --max-body' });
    if (declared > limits.maxBodyBytes) throw tooLarge();
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of req) {
      n += (c as Buffer).length;
      if (n > limits.maxBodyBytes) throw tooLarge();
      parts.push(c as Buffer);
    }
    try {
      return JSON.parse(Buffer.concat(parts).toString('utf8'));
    } catch (e) {
      throw fail('E_SERVE_BAD_JSON', `the request body is not valid JSON (${(e as Error).message})`);
    }
  };

  const errorHeaders = (e: HttpError): Record<string, string> => (e.status === 429 ? { 'retry-after': String(slots.retryAfterS) } : {});

  /** The flow every generation endpoint shares. */
  const generate = async (req: IncomingMessage, res: ServerResponse, a: GenerationAdapter): Promise<Record<string, unknown>> => {
    const ac = new AbortController();
    // 'close' before the response ended: the client went away (also for a request still in the queue).
    res.on('close', () => { if (!res.writableFinished) ac.abort(); });
    let streaming = false;
    const outcome = (x: Outcome) => metrics.request(a.api, x);
    try {
      if (stopping) throw fail('E_SERVE_STOPPING', 'the server is shutting down');
      const parsed = a.parse(await readJson(req));
      const kinds = new Set(model.set.encoders.map((e) => e.kind));
      for (const m of parsed.request.messages) {
        if (m.images.length && !kinds.has('vision')) throw fail('E_SERVE_UNSUPPORTED', `the model '${o.modelId}' takes no images`);
        if (m.audio.length && !kinds.has('audio')) throw fail('E_SERVE_UNSUPPORTED', `the model '${o.modelId}' takes no audio`);
      }
      await checkMedia(parsed.request.messages, limits);
      if (parsed.noop) {
        outcome('ok');
        sendJson(res, 200, { model: o.modelId, created_at: new Date().toISOString(), message: { role: 'assistant', content: '' }, response: '', done: true, done_reason: 'load' });
        return { status: 200 };
      }
      running.add(ac);
      const task = slots.submit({
        request: parsed.request, signal: ac.signal,
        onStart: () => {
          if (!parsed.stream) return;
          streaming = true;
          res.writeHead(200, { 'content-type': a.streamType, 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
          res.write(a.begin());
        },
        onText: (t) => { if (parsed.stream && !res.writableEnded) res.write(a.delta(t)); },
      });
      let r: ServeResult;
      try {
        r = await task;
      } finally {
        running.delete(ac);
      }
      metrics.generation(r.stats);
      const fields = { status: 200, ...r.stats, stopReason: r.stopReason };
      // Aborted by the client (not by a shutdown, whose answers end normally): nobody is listening.
      if (ac.signal.aborted && !stopping) {
        outcome('cancelled');
        res.destroy();
        return { ...fields, status: 499 };
      }
      outcome('ok');
      if (parsed.stream) res.end(a.end(r));
      else sendJson(res, 200, a.whole(r));
      return fields;
    } catch (e) {
      const he = httpError(e);
      outcome(he.code === 'E_SERVE_CANCELLED' ? 'cancelled' : he.status === 429 || he.status === 503 ? 'refused' : he.status >= 500 ? 'server_error' : 'client_error');
      if (he.status === 500) process.stderr.write(`serve: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
      if (ac.signal.aborted) res.destroy();
      else if (streaming) res.end(a.streamError(he));
      else sendJson(res, he.status, a.error(he), errorHeaders(he));
      return { status: he.status, error: he.code };
    }
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<Record<string, unknown>> => {
    const path = (req.url ?? '/').split('?')[0]!;
    const method = req.method ?? 'GET';
    const isOpenai = path.startsWith('/v1/');
    const isApi = isOpenai || path.startsWith('/api/') || path === '/metrics';
    const errorBody = (e: HttpError) => (isOpenai ? openaiError(e) : ollamaError(e));
    const refuse = (e: unknown) => {
      const he = httpError(e);
      sendJson(res, he.status, path.startsWith('/api/') || isOpenai ? errorBody(he) : { error: { code: he.code, message: he.message } }, errorHeaders(he));
      return { status: he.status, error: he.code };
    };
    if (isApi && !authorized(req))
      return refuse(fail('E_SERVE_AUTH', 'missing or wrong API key', { hint: 'send Authorization: Bearer KEY' }));
    const key = `${method} ${path}`;
    switch (key) {
      case 'GET /': case 'GET /index.html':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'" });
        res.end(CHAT_PAGE);
        return { status: 200 };
      case 'GET /health': case 'HEAD /health': {
        await power.sample();
        const p = power.report();
        sendJson(res, stopping ? 503 : 200, { status: stopping ? 'stopping' : 'ok', model: o.modelId, busy: slots.busy, queue: slots.queued, max_queue: o.maxQueue ?? 16,
          power: { state: p.state, alpha: p.alpha, battery_percent: p.batteryPercent, thresholds: p.thresholds, transitions: p.transitions,
            decoder_threads: p.decoderThreads, encoder_releases: p.encoderReleases } });
        return { status: stopping ? 503 : 200 };
      }
      case 'GET /metrics':
        await power.sample();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(metrics.render());
        return { status: 200 };
      case 'GET /v1/models':
        sendJson(res, 200, openaiModels(o.modelId, created));
        return { status: 200 };
      case 'POST /v1/chat/completions': return generate(req, res, openaiChat(o.modelId));
      case 'POST /api/chat': return generate(req, res, ollamaChat(o.modelId));
      case 'POST /api/generate': return generate(req, res, ollamaGenerate(o.modelId));
      case 'GET /api/tags':
        sendJson(res, 200, { models: [described.tag] });
        return { status: 200 };
      case 'GET /api/ps':
        sendJson(res, 200, { models: [{ ...described.tag, expires_at: '0001-01-01T00:00:00Z', size_vram: 0 }] });
        return { status: 200 };
      case 'POST /api/show': {
        let body: unknown;
        try {
          body = await readJson(req);
        } catch (e) {
          return refuse(e);
        }
        const b = (body ?? {}) as { model?: unknown; name?: unknown };
        const asked = b.model ?? b.name;
        if (asked !== o.modelId && asked !== `${o.modelId}:latest`) return refuse(fail('E_SERVE_MODEL', `model '${String(asked)}' not found`));
        sendJson(res, 200, described.show);
        return { status: 200 };
      }
      case 'GET /api/version':
        sendJson(res, 200, { version: o.version });
        return { status: 200 };
    }
    if (path.startsWith('/v1/models/') && method === 'GET') {
      const id = decodeURIComponent(path.slice('/v1/models/'.length));
      if (id !== o.modelId) return refuse(fail('E_SERVE_MODEL', `the model '${id}' does not exist`));
      sendJson(res, 200, openaiModels(o.modelId, created).data[0]);
      return { status: 200 };
    }
    return refuse(fail('E_SERVE_NOT_FOUND', `no route ${method} ${path}`));
  };

  const server: Server = createServer((req, res) => {
    const t0 = performance.now();
    route(req, res).then((fields) => log({ method: req.method, path: req.url, ms: performance.now() - t0, ...fields }), (e) => {
      process.stderr.write(`serve: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'E_INTERNAL', message: 'internal error' } });
      else res.destroy();
    });
  });
  server.requestTimeout = 0; // long generations stream for as long as they need
  server.headersTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(fail('E_SERVE_LISTEN', `cannot listen on ${host}:${o.port ?? 8080} (${e.code ?? e.message})`,
      { hint: e.code === 'EADDRINUSE' ? 'pick another --port' : undefined })));
    server.listen(o.port ?? 8080, host, resolve);
  });
  const port = (server.address() as { port: number }).port;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}`, port, slots, metrics,
    async close(graceMs = 10_000) {
      if (stopping) return;
      stopping = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await slots.close(graceMs, () => { for (const ac of running) ac.abort(); });
      server.closeAllConnections();
      await closed;
    },
  };
}
