/**
 * `nanomind chat` when stdin is not a terminal: one input line per message or command, each answer streamed
 * to `out` and ended with a newline, notices and errors to `err`. With `json`, each outcome is one JSON line on
 * `out` instead (`{text, tokens, stopReason, stats}`, `{info}`, `{error:{code, message, hint}}`), which
 * is what scripts and tests read.
 */
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import type { Conversation, Outcome } from './session.js';

export interface LineChatOptions {
  readonly input: Readable;
  readonly out: Writable;
  readonly err: Writable;
  readonly json?: boolean;
}

export interface LineChatSummary {
  readonly turns: number;
  readonly errors: number;
}

export async function runLineChat(c: Conversation, o: LineChatOptions): Promise<LineChatSummary> {
  const rl = createInterface({ input: o.input, crlfDelay: Infinity, terminal: false });
  let turns = 0, errors = 0;
  try {
    for await (const line of rl) {
      const r: Outcome = await c.handle(line, { onText: o.json ? undefined : (t) => { o.out.write(t); } });
      if (r.kind === 'exit') break;
      if (r.kind === 'answer') {
        turns++;
        o.out.write(o.json ? JSON.stringify(r.result) + '\n' : '\n');
      } else if (r.kind === 'info') {
        if (o.json) o.out.write(JSON.stringify({ info: r.text }) + '\n');
        else o.err.write(r.text + '\n');
      } else if (r.kind === 'error') {
        errors++;
        if (o.json) o.out.write(JSON.stringify({ error: r.error }) + '\n');
        else o.err.write(`error[${r.error.code}] ${r.error.message}\n${r.error.hint ? `hint: ${r.error.hint}\n` : ''}`);
      }
    }
  } finally {
    rl.close();
  }
  return { turns, errors };
}
