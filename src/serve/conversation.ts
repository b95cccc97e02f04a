/**
 * A stateless request's whole conversation → the prompt ids and feature rows of its last user turn.
 * Each user message goes through `prepareTurn` in order, exactly as `nanomind chat` builds its history,
 * so the ids an API client's replayed conversation produces are the ids the KV cache already holds
 * from the previous request (the slot's prefix match then skips them).
 */
import { fail } from '../errors.js';
import type { ChatMessage } from '../run/inputs/chat-template.js';
import { prepareTurn, type PreparedTurn, type RuntimeModel } from '../run/model.js';
import type { ServeMessage } from './request.js';

export async function prepareConversation(m: RuntimeModel, messages: readonly ServeMessage[]): Promise<PreparedTurn> {
  const lastUser = messages.map((x) => x.role).lastIndexOf('user');
  if (lastUser < 0 || lastUser !== messages.length - 1)
    throw fail('E_SERVE_BAD_REQUEST', 'the last message must be the user\'s', { hint: 'an assistant message cannot be continued by this server' });
  const history: ChatMessage[] = [];
  let encoded: Record<number, Float32Array> = {};
  let encodeMs = 0;
  let turn: PreparedTurn | undefined;
  for (const msg of messages) {
    if (msg.role !== 'user') {
      if (msg.images.length || msg.audio.length) throw fail('E_SERVE_BAD_REQUEST', `a ${msg.role} message cannot carry images or audio`);
      history.push({ role: msg.role, content: msg.text });
      continue;
    }
    turn = await prepareTurn(m, {
      prompt: msg.text, images: msg.images.map((bytes) => ({ bytes })), audio: msg.audio.map((bytes) => ({ bytes })),
    }, history, encoded);
    encodeMs += turn.encodeMs;
    history.push(turn.message);
    encoded = turn.features;
  }
  return { ...turn!, encodeMs };
}
