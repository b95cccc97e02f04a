/**
 * Florence-2's text side of its processor (transformers.js Florence2Processor.construct_prompts, Python
 * Florence2Processor._construct_prompts): a task token becomes the sentence the model was trained on.
 *
 *   '<CAPTION>'                                  → 'What does the image describe?'   (task_prompts_without_inputs)
 *   '<CAPTION_TO_PHRASE_GROUNDING>a cat'         → 'Locate the phrases in the caption: a cat'
 *                                                   (task_prompts_with_input: '{input}' ← the whole text, the task token removed)
 *   anything else                                → itself
 *
 * The tables are read from preprocessor_config.json, where the hub's export keeps them. The pixels need no
 * family code: Florence-2 uses a plain CLIPImageProcessor (../image.ts). Its image features go in front of
 * the prompt, not into placeholders, so this family has no placeholder and is not an ImageFamily.
 */
import { fail } from '../../../errors.js';

export interface TaskPrompts {
  /** The prompt text for `text` (a task token, a task token with input, or free text). */
  construct(text: string): string;
  /** The task tokens the model knows, for messages. */
  readonly tasks: readonly string[];
}

const table = (v: unknown, key: string, where: string): Map<string, string> => {
  if (v === undefined) return new Map();
  if (!v || typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string'))
    throw fail('E_PREPROCESSOR', `${where}: ${key} should map task tokens to prompt strings`, { file: where });
  return new Map(Object.entries(v as Record<string, string>));
};

export function florence2TaskPrompts(preprocessor: Readonly<Record<string, unknown>>, where: string): TaskPrompts {
  const without = table(preprocessor.task_prompts_without_inputs, 'task_prompts_without_inputs', where);
  const withInput = table(preprocessor.task_prompts_with_input, 'task_prompts_with_input', where);
  return {
    tasks: [...without.keys(), ...withInput.keys()],
    construct(text) {
      const fixed = without.get(text);
      if (fixed !== undefined) return fixed;
      // As transformers.js: the first task (in table order) the text contains; replaceAll on both.
      for (const [task, prompt] of withInput) if (text.includes(task)) return prompt.replaceAll('{input}', text).replaceAll(task, '');
      return text;
    },
  };
}
