/**
 * The terminal UI of `nanomind chat` (ink + React): finished messages scroll up as static output, the
 * answer being generated streams below them, then the input line and a status line (speed of the last
 * turn, memory, context use, attachments). All conversation logic is in `Conversation` (session.ts);
 * this file only maps keys to lines and outcomes to text.
 *
 * Keys: Enter sends, Backspace deletes, Ctrl-U clears the line, ↑/↓ walk the input history, Ctrl-C stops
 * the answer being generated (or quits when idle), Ctrl-D on an empty line quits.
 */
import { Box, Static, Text, render, useApp, useInput } from 'ink';
import { useCallback, useRef, useState } from 'react';
import { attachmentsLine, helpText, statusLine, type Conversation, type TurnStats } from './session.js';

export interface ChatAppProps {
  readonly conversation: Conversation;
  /** Shown in the header: the model folder. */
  readonly title?: string;
}

type EntryKind = 'user' | 'assistant' | 'info' | 'error' | 'header';
interface Entry { readonly id: number; readonly kind: EntryKind; readonly text: string }

const COLORS: Record<EntryKind, string | undefined> = { user: 'cyan', assistant: undefined, info: 'gray', error: 'red', header: 'green' };
const PREFIX: Record<EntryKind, string> = { user: '› ', assistant: '', info: '', error: '', header: '' };

export function ChatApp({ conversation, title }: ChatAppProps) {
  const { exit } = useApp();
  const nextId = useRef(1);
  const [entries, setEntries] = useState<Entry[]>(() => [{ id: 0, kind: 'header', text: header(conversation, title) }]);
  // The line lives in a ref too: keys can arrive faster than React re-subscribes the input handler, and
  // a handler from an older render would see an older line.
  const [input, setInputState] = useState('');
  const line = useRef('');
  const setInput = useCallback((next: string | ((s: string) => string)) => {
    line.current = typeof next === 'function' ? next(line.current) : next;
    setInputState(line.current);
  }, []);
  const [answer, setAnswer] = useState<string | undefined>();
  const [busyState, setBusyState] = useState(false);
  const busy = useRef(false);
  const setBusy = useCallback((b: boolean) => { busy.current = b; setBusyState(b); }, []);
  const [status, setStatus] = useState(() => statusLine(conversation));
  const [attached, setAttached] = useState('');
  const abort = useRef<AbortController | undefined>(undefined);
  const past = useRef<string[]>([]);
  const cursor = useRef(-1);

  const add = useCallback((kind: EntryKind, text: string) => {
    setEntries((e) => [...e, { id: nextId.current++, kind, text }]);
  }, []);

  const submit = useCallback(async (text: string) => {
    if (text.trim()) past.current.push(text);
    cursor.current = -1;
    setInput('');
    const isMessage = text.trim() && !/^\/(?!\/)/.test(text.trim());
    if (isMessage) add('user', text);
    setBusy(true);
    const ac = new AbortController();
    abort.current = ac;
    let streamed = '';
    if (isMessage) setAnswer('');
    try {
      const r = await conversation.handle(text, { signal: ac.signal, onText: (t) => { streamed += t; setAnswer(streamed); } });
      if (r.kind === 'exit') { exit(); return; }
      if (r.kind === 'answer') add('assistant', `${r.result.text}${suffix(r.result.stopReason, r.result.stats)}`);
      else if (r.kind === 'info') add('info', r.text);
      else if (r.kind === 'error') add('error', `error[${r.error.code}] ${r.error.message}${r.error.hint ? `\nhint: ${r.error.hint}` : ''}`);
    } catch (e) {
      // A bug, not a user error: show it and leave, so the CLI boundary reports it.
      exit(e as Error);
      return;
    } finally {
      abort.current = undefined;
      setAnswer(undefined);
      setBusy(false);
      setStatus(statusLine(conversation));
      setAttached(attachmentsLine(conversation));
    }
  }, [add, conversation, exit, setInput, setBusy]);

  useInput((ch, key) => {
    if (key.ctrl && ch === 'c') {
      if (abort.current) abort.current.abort();
      else exit();
      return;
    }
    if (key.ctrl && ch === 'd') {
      if (!busy.current && !line.current) exit();
      return;
    }
    if (busy.current) return;
    if (key.return) { void submit(line.current); return; }
    if (key.backspace || key.delete) { setInput((s) => [...s].slice(0, -1).join('')); return; }
    if (key.ctrl && ch === 'u') { setInput(''); return; }
    if (key.upArrow || key.downArrow) {
      const h = past.current;
      if (!h.length) return;
      const at = cursor.current < 0 ? h.length : cursor.current;
      const next = key.upArrow ? Math.max(0, at - 1) : at + 1;
      cursor.current = next >= h.length ? -1 : next;
      setInput(cursor.current < 0 ? '' : h[cursor.current]!);
      return;
    }
    if (key.ctrl || key.meta || key.escape || key.tab || !ch) return;
    // A paste arrives as one chunk; a pasted newline sends what came before it.
    const lines = ch.replace(/\r\n?/g, '\n').split('\n');
    if (lines.length > 1) { void submit(line.current + lines[0]); return; }
    setInput((s) => s + ch);
  }, { isActive: true });

  return (
    <Box flexDirection="column">
      <Static items={entries}>
        {(e) => (
          <Box key={e.id} marginBottom={e.kind === 'assistant' || e.kind === 'header' ? 1 : 0}>
            <Text color={COLORS[e.kind]} dimColor={e.kind === 'info'}>{PREFIX[e.kind]}{e.text}</Text>
          </Box>
        )}
      </Static>
      {answer !== undefined && <Text>{answer}<Text dimColor>▍</Text></Text>}
      {busyState && answer === undefined && <Text dimColor>…</Text>}
      {attached && <Text color="yellow">{attached}</Text>}
      <Box>
        <Text color="cyan">{busyState ? '  ' : '› '}</Text>
        <Text>{input}</Text>
        {!busyState && <Text inverse> </Text>}
      </Box>
      <Text dimColor>{busyState ? `generating… (Ctrl-C stops) · ${status}` : status}</Text>
    </Box>
  );
}

function header(c: Conversation, title: string | undefined): string {
  const set = c.model.set;
  const encoders = set.encoders.map((e) => e.kind).join(', ');
  return [
    `nanomind chat · ${title ?? set.dir} · bricks: ${set.manifest.bricks.map((b) => b.name).join(', ')}${encoders ? ` (media: ${encoders})` : ''}`,
    helpText(),
  ].join('\n');
}

function suffix(reason: string, s: TurnStats): string {
  const note = reason === 'eos' || reason === 'stop-string' ? '' : ` [${reason}]`;
  return `${note}\n(${s.newTokens} tokens, ${s.decodeTokPerS.toFixed(1)} tok/s, ${s.reusedTokens} prompt tokens reused)`;
}

/** Renders the app on the real terminal and resolves when the user quits (rejects on a bug). */
export async function runChatUi(conversation: Conversation, title?: string): Promise<void> {
  const app = render(<ChatApp conversation={conversation} title={title} />, { exitOnCtrlC: false });
  await app.waitUntilExit();
}
