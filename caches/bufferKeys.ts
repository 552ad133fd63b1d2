// Keys of the runtime's shared buffer table. Programs and the session's memory meet on these keys (a traced
// state `L3.k` is the buffer `m0/state:L3.k`), so they are made here and nowhere else.

/**
 * weight, state, input, output: buffers a program declares; snapshot: snapshot planes of a state; memory: the
 * memory's own helpers (zero state, copy scratch).
 */
export type BufferRole = 'weight' | 'state' | 'input' | 'output' | 'snapshot' | 'memory';

/** The key of a buffer `name` of a role, in a session's namespace (e.g. 'm0/'). */
export function bufferKey(namespace: string, role: BufferRole, name: string): string {
  return `${namespace}${role}:${name}`;
}
