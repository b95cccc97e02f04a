/**
 * Hub failures → one NanomindError each. The hub says what went wrong in `X-Error-Code`
 * (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), as huggingface_hub reads it; a missing and
 * a private repo look the same to an anonymous client, so the not-found hint mentions HF_TOKEN too.
 */
import { fail, type NanomindError } from '../errors.js';

export const TOKEN_HINT = 'set HF_TOKEN to a read token from https://huggingface.co/settings/tokens (or run `hf auth login`)';

export interface HubFailure { readonly status: number; readonly errorCode?: string | null; readonly url: string; readonly message?: string }

export function hubError(f: HubFailure, o: { repo: string; revision: string; hasToken: boolean }, cause?: unknown): NanomindError {
  const where = `${o.repo}@${o.revision}`;
  const detail = f.message ? ` (${f.message})` : '';
  if (f.errorCode === 'GatedRepo')
    return fail('E_PULL_AUTH', `${o.repo} is gated: the hub refused access${detail}`,
      { hint: `accept the model's conditions on its page, then ${o.hasToken ? 'make sure HF_TOKEN belongs to that account' : TOKEN_HINT}` }, cause);
  if (f.errorCode === 'RevisionNotFound')
    return fail('E_PULL_NOT_FOUND', `revision '${o.revision}' not found in ${o.repo}`, { hint: 'check --revision (a branch, tag or commit)' }, cause);
  if (f.errorCode === 'EntryNotFound')
    return fail('E_PULL_NOT_FOUND', `${f.url}: file not found in ${where}`, {}, cause);
  if (f.errorCode === 'RepoNotFound' || f.status === 404)
    return fail('E_PULL_NOT_FOUND', `repository '${o.repo}' not found on the hub${detail}`,
      { hint: o.hasToken ? 'check the repo id (org/name)' : `check the repo id (org/name); if it is private, ${TOKEN_HINT}` }, cause);
  if (f.status === 401 || f.status === 403)
    return fail('E_PULL_AUTH', `the hub refused access to ${where} (HTTP ${f.status})${detail}`,
      { hint: o.hasToken ? 'HF_TOKEN was rejected: check that it is valid and can read this repo' : TOKEN_HINT }, cause);
  if (f.status === 429)
    return fail('E_PULL_HTTP', `the hub is rate limiting requests (HTTP 429) for ${where}`, { hint: `wait a minute and run again; ${TOKEN_HINT}` }, cause);
  return fail('E_PULL_HTTP', `${f.url}: HTTP ${f.status}${detail}`, { hint: 'run again later; the download resumes where it stopped' }, cause);
}

/** fetch rejects with a TypeError for network failures (refused, reset, DNS, body cut short). */
export function isNetworkError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === 'AbortError') return false;
  const code = (e as { cause?: { code?: string } }).cause?.code ?? (e as { code?: string }).code;
  if (code && /^(ECONN|ENOTFOUND|ETIMEDOUT|EAI_|EHOSTUNREACH|ENETUNREACH|EPIPE|UND_ERR_)/.test(code)) return true;
  return e instanceof TypeError && /fetch failed|terminated|network|socket/i.test(e.message);
}
