/**
 * The one error type nanomind throws for user-facing problems. `code` is stable and is what tests and
 * scripts match on; `message` is one line naming the file, brick or value; `hint` says what to do.
 * Anything that is not a NanomindError reaching the CLI boundary is a bug (exit 70).
 */
export type ErrorCode = `E_${string}`;

export interface ErrorDetail {
  readonly file?: string;
  readonly hint?: string;
  readonly notes?: readonly string[];
}

export class NanomindError extends Error {
  override readonly name = 'NanomindError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail: ErrorDetail = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toJSON(): { code: string; message: string; hint?: string; notes?: readonly string[] } {
    return { code: this.code, message: this.message, hint: this.detail.hint, notes: this.detail.notes };
  }
}

export const fail = (code: ErrorCode, message: string, detail?: ErrorDetail, cause?: unknown): NanomindError =>
  new NanomindError(code, message, detail, cause === undefined ? undefined : { cause });

export const isNanomindError = (e: unknown): e is NanomindError => e instanceof NanomindError;
