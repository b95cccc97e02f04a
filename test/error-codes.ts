/** The error code a call fails with: how tests assert "one clear error" without matching messages. */
import { expect } from 'vitest';
import { NanomindError } from '../src/errors.js';

/** The code a promise rejects with ('resolved' if it does not). */
export const code = (p: Promise<unknown>): Promise<string> =>
  p.then(() => 'resolved', (e: { code?: string }) => e.code ?? String(e));

/** The code a synchronous call throws (a NanomindError), or undefined if it returns. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NanomindError);
    return (e as NanomindError).code;
  }
  return undefined;
}
