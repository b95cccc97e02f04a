/**
 * A loopback Hugging Face hub for tests (node:http on 127.0.0.1, random port), serving the routes that
 * @huggingface/hub and `pull` use, with the hub's headers:
 *   GET  /api/models/<repo>/revision/<rev>          model info with `sha` (X-Error-Code RepoNotFound / RevisionNotFound)
 *   GET  /api/models/<repo>/tree/<rev>[/<path>]?recursive=&expand=   listing, paginated with a Link header
 *   GET  /<repo>/resolve/<rev>/<path>               small files: 200/206 with ETag + X-Repo-Commit;
 *                                                   LFS files: 302 to /cdn/<sha256> with X-Linked-Etag + X-Linked-Size
 *   GET  /cdn/<sha256>                              LFS content, Range → 206 + Content-Range
 * Faults: `cutOnce` sends half a body then drops the connection (once per path), `corrupt` serves wrong
 * bytes of the right length, `private` repos answer 401 unless `Authorization: Bearer <token>`.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  readonly id: string;
  readonly files: ReadonlyMap<string, Buffer>;
  readonly private?: boolean;
}

interface Entry { path: string; size: number; oid: string; lfs?: { oid: string; size: number; pointerSize: number }; data: Buffer }
interface Repo { id: string; commit: string; private: boolean; entries: Map<string, Entry> }

export interface RequestLog { readonly method: string; readonly url: string; readonly range?: string; readonly auth?: string }

const sha = (algo: string, ...parts: (string | Buffer)[]) => { const h = createHash(algo); for (const p of parts) h.update(p); return h.digest('hex'); };
export const gitBlobOid = (data: Buffer): string => sha('sha1', `blob ${data.length}\0`, data);
const isLfs = (path: string, size: number) => /\.onnx(_data(_\d+)?)?$/.test(path) || size >= 1 << 20;

export class FakeHub {
  readonly requests: RequestLog[] = [];
  /** Body bytes sent per repo path (resolve + CDN), across requests. */
  readonly bytesSent = new Map<string, number>();
  readonly cutOnce = new Set<string>();
  readonly corrupt = new Set<string>();
  token = 'hf_test_token';
  pageSize = 4;
  private readonly repos = new Map<string, Repo>();
  private readonly bySha = new Map<string, { repo: Repo; entry: Entry }>();
  private server?: Server;
  url = '';

  addRepo(r: FakeRepo): { commit: string; entries: Map<string, Entry> } {
    const entries = new Map<string, Entry>();
    for (const [path, data] of [...r.files].sort(([a], [b]) => a.localeCompare(b))) {
      if (isLfs(path, data.length)) {
        const oid = sha('sha256', data);
        const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${data.length}\n`;
        entries.set(path, { path, size: data.length, oid: gitBlobOid(Buffer.from(pointer)), lfs: { oid, size: data.length, pointerSize: pointer.length }, data });
      } else entries.set(path, { path, size: data.length, oid: gitBlobOid(data), data });
    }
    const commit = sha('sha1', r.id, ...[...entries.values()].map((e) => e.oid));
    const repo = { id: r.id, commit, private: !!r.private, entries };
    this.repos.set(r.id, repo);
    for (const e of entries.values()) if (e.lfs) this.bySha.set(e.lfs.oid, { repo, entry: e });
    return { commit, entries };
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => { this.handle(req, res); });
    await new Promise<void>((ok) => this.server!.listen(0, '127.0.0.1', ok));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((ok) => (this.server ? this.server.close(() => ok()) : ok()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const u = new URL(req.url ?? '/', this.url);
    this.requests.push({ method: req.method ?? 'GET', url: u.pathname + u.search, range: req.headers.range, auth: req.headers.authorization });
    let m: RegExpExecArray | null;
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(u.pathname))) {
      const repo = this.access(m[1], decodeURIComponent(m[2]), req, res);
      if (repo) json(res, 200, { _id: repo.commit.slice(0, 24), id: repo.id, sha: repo.commit, private: repo.private, gated: false, downloads: 0, likes: 0,
        lastModified: '2024-01-01T00:00:00.000Z', pipeline_tag: 'image-text-to-text', siblings: [...repo.entries.keys()].map((rfilename) => ({ rfilename })) });
      return;
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(u.pathname))) {
      const repo = this.access(m[1], decodeURIComponent(m[2]), req, res);
      if (repo) this.tree(repo, m[3] ?? '', u, res);
      return;
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(u.pathname))) {
      const repo = this.access(m[1], decodeURIComponent(m[2]), req, res);
      if (!repo) return;
      const path = m[3].split('/').map(decodeURIComponent).join('/');
      const e = repo.entries.get(path);
      if (!e) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      const common = { 'X-Repo-Commit': repo.commit };
      if (e.lfs) {
        res.writeHead(302, { ...common, Location: `/cdn/${e.lfs.oid}`, 'X-Linked-Etag': `"${e.lfs.oid}"`, 'X-Linked-Size': String(e.size), ETag: `"${e.oid}"` });
        res.end();
        return;
      }
      this.content(e, req, res, { ...common, ETag: `"${e.oid}"` });
      return;
    }
    if ((m = /^\/cdn\/([0-9a-f]{64})$/.exec(u.pathname))) {
      const hit = this.bySha.get(m[1]);
      if (!hit) return json(res, 404, { error: 'not found' });
      this.content(hit.entry, req, res, { ETag: `"${hit.entry.lfs!.oid}"` });
      return;
    }
    json(res, 404, { error: `no route ${u.pathname}` });
  }

  /** The hub's answers for a missing repo, a bad token and an unknown revision. */
  private access(id: string, rev: string, req: IncomingMessage, res: ServerResponse): Repo | undefined {
    const repo = this.repos.get(id);
    if (!repo) { json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound', 'X-Error-Message': 'Repository not found' }); return undefined; }
    if (repo.private && req.headers.authorization !== `Bearer ${this.token}`) {
      json(res, 401, { error: 'Invalid credentials in Authorization header' }, { 'X-Error-Message': 'Invalid credentials in Authorization header' });
      return undefined;
    }
    if (rev !== 'main' && rev !== repo.commit) {
      json(res, 404, { error: `Invalid rev id: ${rev}` }, { 'X-Error-Code': 'RevisionNotFound' });
      return undefined;
    }
    return repo;
  }

  private tree(repo: Repo, prefix: string, u: URL, res: ServerResponse): void {
    const recursive = u.searchParams.get('recursive') === 'true';
    const under = [...repo.entries.values()].filter((e) => !prefix || e.path.startsWith(`${prefix}/`));
    const items: Record<string, unknown>[] = [];
    const dirs = new Set<string>();
    for (const e of under) {
      const rest = prefix ? e.path.slice(prefix.length + 1) : e.path;
      const parts = rest.split('/');
      for (let i = 1; i < parts.length && (recursive || i === 1); i++) {
        const d = [prefix, ...parts.slice(0, i)].filter(Boolean).join('/');
        if (!dirs.has(d)) { dirs.add(d); items.push({ type: 'directory', oid: sha('sha1', d), size: 0, path: d }); }
      }
      if (recursive || parts.length === 1) items.push({ type: 'file', oid: e.oid, size: e.size, path: e.path, ...(e.lfs ? { lfs: e.lfs } : {}) });
    }
    const cursor = Number(u.searchParams.get('cursor') ?? 0);
    const page = items.slice(cursor, cursor + this.pageSize);
    const headers: Record<string, string> = {};
    if (cursor + this.pageSize < items.length) {
      const next = new URL(u);
      next.searchParams.set('cursor', String(cursor + this.pageSize));
      headers.Link = `<${next.href}>; rel="next"`;
    }
    json(res, 200, page, headers);
  }

  private content(e: Entry, req: IncomingMessage, res: ServerResponse, headers: Record<string, string>): void {
    let data = e.data;
    if (this.corrupt.has(e.path)) { data = Buffer.from(data); data[data.length >> 1] ^= 0xff; }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) start = Number(range[1]);
    const body = data.subarray(start);
    res.writeHead(range ? 206 : 200, {
      ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.length), 'Accept-Ranges': 'bytes',
      ...(range ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
    });
    const count = (n: number) => this.bytesSent.set(e.path, (this.bytesSent.get(e.path) ?? 0) + n);
    if (this.cutOnce.delete(e.path)) {
      const half = body.subarray(0, body.length >> 1);
      count(half.length);
      res.write(half, () => res.socket?.destroy());
      return;
    }
    count(body.length);
    res.end(body);
  }
}

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { ...headers, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) });
  res.end(body);
}
