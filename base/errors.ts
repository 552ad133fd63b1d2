// Errors about the user's input (a config, a checkpoint, a prompt, an option) as opposed to bugs: the CLI prints
// a user error as one line without a stack, and keeps the stack of anything else.

/** A brand on the prototype, found by Symbol.for, so that a second copy of this module still recognises it. */
const USER_ERROR = Symbol.for('strata.userError');

/** Base class of every error whose message tells the user what to change. */
export class StrataUserError extends Error {
  override name = 'StrataUserError';
}
Object.defineProperty(StrataUserError.prototype, USER_ERROR, { value: true });

/**
 * Brands an error class that cannot extend StrataUserError (declared in a module that must not import this one)
 * as a user error.
 */
export function declareUserError(errorClass: abstract new (...args: never[]) => Error): void {
  Object.defineProperty(errorClass.prototype, USER_ERROR, { value: true, configurable: true });
}

export function isUserError(error: unknown): error is Error {
  return error instanceof Error && (error as { [USER_ERROR]?: unknown })[USER_ERROR] === true;
}

/** Longest piece of untrusted text (a tensor name, a shape, a JSON value) put into a message. */
export const MAX_QUOTED_CHARS = 300;

/** `text` if short, else its head and tail around a note of how much was left out. */
export function elide(text: string, maxChars = MAX_QUOTED_CHARS): string {
  if (text.length <= maxChars) return text;
  const head = Math.ceil(maxChars * 0.6);
  const tail = Math.floor(maxChars * 0.3);
  return `${text.slice(0, head)}…[${text.length - head - tail} characters elided]…${text.slice(text.length - tail)}`;
}

/**
 * A short description of an untrusted JSON value for an error message: never recurses deeper than `depth`,
 * never visits more than a few entries, never longer than MAX_QUOTED_CHARS.
 */
export function describeJson(value: unknown, depth = 2): string {
  const seen = { entries: 0 };
  const render = (item: unknown, level: number): string => {
    if (item === null || typeof item !== 'object') {
      if (typeof item === 'string') return JSON.stringify(elide(item, 80));
      if (typeof item === 'number' || typeof item === 'boolean') return String(item);
      return typeof item;
    }
    if (level >= depth) return Array.isArray(item) ? `[…${item.length} items]` : '{…}';
    const parts: string[] = [];
    const total = Array.isArray(item) ? item.length : Object.keys(item).length;
    const entries = Array.isArray(item) ? item.slice(0, 9).map((v, i) => [String(i), v] as const) : Object.entries(item).slice(0, 9);
    for (const [key, child] of entries) {
      if (parts.length >= 8 || seen.entries++ > 32) {
        parts.push(`…${total - parts.length} more`);
        break;
      }
      parts.push(Array.isArray(item) ? render(child, level + 1) : `${JSON.stringify(elide(key, 40))}: ${render(child, level + 1)}`);
    }
    return Array.isArray(item) ? `[${parts.join(', ')}]` : `{${parts.join(', ')}}`;
  };
  return elide(render(value, 0));
}

/** A message for one line of a terminal: newlines joined with '; ', bounded in length. */
export function oneLine(message: string, maxChars = 4000): string {
  return elide(message.replace(/\s*\n\s*/g, '; '), maxChars);
}
