// Saving a session's memory to a file and restoring it into another session: a safetensors file (written
// atomically) with one tensor per slot buffer, a SHA-256 checksum over names, shapes and bytes, and the
// fingerprints of the model and of the memory layout. A file that does not fit is refused before any
// buffer of the live session is touched.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { StrataUserError, elide, isUserError } from '../base/errors.ts';
import type { ModelSource } from '../base/modelSource.ts';
import { SafetensorsFile } from '../base/safetensors.ts';
import { type TensorToWrite, removeStaleTemporaries, writeSafetensors } from '../base/safetensorsWrite.ts';
import { type HybridMemory, MemoryError } from './hybridMemory.ts';
import { type MemoryOptions, type MemorySpec, effectiveWindow, isRing, kvEntries } from './spec.ts';

export class RestoreError extends StrataUserError {
  override name = 'RestoreError';
}

export const MEMORY_FILE_FORMAT = 'strata-memory/1';

/** JSON with object keys sorted, so equal values hash equally. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

const sha256 = (text: string | Uint8Array) => createHash('sha256').update(text).digest('hex');

/**
 * Identity of a model: its family, its (normalized) config, every checkpoint tensor's name, shape and dtype,
 * and the values of the constants it computes (RoPE frequencies).
 */
export function modelFingerprint(parts: {
  family: string;
  config?: unknown;
  weights: { name: string; shape: readonly number[]; dtype: string }[];
  constants?: Record<string, Float32Array>;
}): string {
  const weights = [...parts.weights].sort((a, b) => (a.name < b.name ? -1 : 1)).map((w) => [w.name, w.dtype, [...w.shape]]);
  const constants = Object.entries(parts.constants ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, v]) => [name, sha256(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))]);
  return sha256(stableJson({ family: parts.family, config: parts.config ?? null, weights, constants }));
}

/** Identity of a memory layout: what each layer keeps per slot (capacity and slot count may differ). */
export function memoryFingerprint(spec: MemorySpec, options: MemoryOptions): string {
  const layers = spec.map((l) => ({
    kv: l.kv
      ? {
          kvHeads: l.kv.kvHeads,
          headDim: l.kv.headDim,
          valueDim: l.kv.valueDim ?? l.kv.headDim,
          sharesWith: l.kv.sharesWith ?? null,
          window: effectiveWindow(l.kv, options) ?? null,
          ringEntries: isRing(l.kv, options) ? kvEntries(l.kv, options) : null,
          ...(l.kv.policy ? { policy: l.kv.policy, entries: kvEntries(l.kv, options) } : {}),
        }
      : null,
    states: l.states.map((s) => ({ name: s.name, shape: s.shape })),
  }));
  return sha256(stableJson(layers));
}

interface NamedBytes {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

function checksum(tensors: NamedBytes[]): string {
  const hash = createHash('sha256');
  for (const t of [...tensors].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    hash.update(`${t.name}\0${t.dtype}\0${t.shape.join(',')}\0`);
    hash.update(t.bytes);
  }
  return hash.digest('hex');
}

const sequencesSchema = z.array(z.object({ slot: z.number().int().min(0), length: z.number().int().min(0) }).strict()).min(1);

export interface SavedMemory {
  file: string;
  bytes: number;
  sequences: { slot: number; length: number }[];
}

/** The memory of some slots (default: all) and their positions as a memory file's tensors and metadata. One readback. */
export async function encodeMemory(memory: HybridMemory, opts: { slots?: number[] } = {}): Promise<EncodedMemory> {
  const slots = opts.slots ?? [...memory.lengths.keys()];
  if (!slots.length) throw new MemoryError('saveMemory: no slots to save');
  if (new Set(slots).size !== slots.length) throw new MemoryError(`saveMemory: slots listed twice: ${slots.join(', ')}`);
  const layout = slots.map((slot) => ({ slot, length: memory.lengths[slot]!, tensors: memory.slotTensors(slot) }));
  const regions = layout.flatMap((s) => s.tensors.map((t) => t.region));
  const data = await memory.device.read(regions);
  const tensors: NamedBytes[] = [];
  let at = 0;
  for (const s of layout)
    for (const t of s.tensors) {
      const bytes = data[at++]!;
      if (t.name === 'pos') {
        const devicePos = new Int32Array(bytes.buffer, bytes.byteOffset, 1)[0]!;
        if (devicePos !== s.length) throw new MemoryError(`saveMemory: slot ${s.slot} is at position ${devicePos} on the device but ${s.length} on the host`);
      }
      tensors.push({ name: `seq${s.slot}.${t.name}`, dtype: t.dtype, shape: t.shape, bytes });
    }
  const sequences = layout.map(({ slot, length }) => ({ slot, length }));
  const metadata: Record<string, string> = {
    'strata.format': MEMORY_FILE_FORMAT,
    'strata.model': memory.model?.fingerprint ?? '',
    'strata.family': memory.model?.family ?? '',
    'strata.memory': memoryFingerprint(memory.spec, memory.options),
    'strata.sequences': JSON.stringify(sequences),
    'strata.checksum': checksum(tensors),
  };
  const toWrite = new Map<string, TensorToWrite>(tensors.map((t) => [t.name, { dtype: t.dtype as TensorToWrite['dtype'], shape: t.shape, data: t.bytes }]));
  return { tensors: toWrite, metadata, bytes: tensors.reduce((a, t) => a + t.bytes.byteLength, 0), sequences };
}

export interface EncodedMemory {
  tensors: Map<string, TensorToWrite>;
  metadata: Record<string, string>;
  bytes: number;
  sequences: { slot: number; length: number }[];
}

/** Writes the memory of some slots (default: all) and their positions to `file`, atomically. One readback. */
export async function saveMemory(memory: HybridMemory, file: string, opts: { slots?: number[] } = {}): Promise<SavedMemory> {
  const { tensors, metadata, bytes, sequences } = await encodeMemory(memory, opts);
  await writeSafetensors(file, tensors, metadata);
  return { file, bytes, sequences };
}

export interface RestoredMemory {
  file: string;
  /** Saved slot, the slot it went into, and its length. */
  sequences: { from: number; into: number; length: number }[];
}

/**
 * Loads a file written by saveMemory into this memory: every saved sequence into its own slot, or a file
 * holding one sequence into slot `into`. Everything is checked (format, model, memory layout, tensor names
 * and shapes, checksum, positions) before the first byte is written; a refusal leaves the session as it was.
 */
export async function restoreMemory(memory: HybridMemory, from: string | { source: ModelSource; name: string }, opts: { into?: number } = {}): Promise<RestoredMemory> {
  const file = typeof from === 'string' ? from : from.source.where(from.name);
  const refuse = (why: string): never => {
    throw new RestoreError(`${file}: cannot restore session memory: ${why}`);
  };
  if (typeof from === 'string') await removeStaleTemporaries(from); // left by a save of this file that was killed midway
  let source: SafetensorsFile;
  try {
    source = typeof from === 'string' ? await SafetensorsFile.open(from) : await SafetensorsFile.open(from.source, from.name);
  } catch (error) {
    if (!isUserError(error)) throw error;
    return refuse(`not a readable safetensors file (truncated or damaged?): ${error.message}`);
  }
  try {
    const md = source.metadata;
    if (md['strata.format'] !== MEMORY_FILE_FORMAT)
      refuse(`it is not a Strata memory file (format ${md['strata.format'] === undefined ? 'null' : JSON.stringify(elide(md['strata.format'], 80))}, expected ${JSON.stringify(MEMORY_FILE_FORMAT)})`);
    const model = memory.model?.fingerprint ?? '';
    if ((md['strata.model'] ?? '') !== model)
      refuse(
        `it was saved by another model (${md['strata.family'] || 'unknown family'}, fingerprint ${(md['strata.model'] || 'none').slice(0, 12)}) ` +
          `than this session's (${memory.model?.family ?? 'unknown family'}, fingerprint ${(model || 'none').slice(0, 12)}): the config or the weights differ`,
      );
    const layout = memoryFingerprint(memory.spec, memory.options);
    if (md['strata.memory'] !== layout)
      refuse(`its memory layout (fingerprint ${(md['strata.memory'] ?? 'none').slice(0, 12)}) differs from this session's (${layout.slice(0, 12)}): per-layer KV heads, dims, windows, ring sizes or state shapes differ`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(md['strata.sequences'] ?? '');
    } catch {
      return refuse('its strata.sequences metadata is not JSON');
    }
    const sequences = sequencesSchema.safeParse(parsed);
    if (!sequences.success) return refuse(`its strata.sequences metadata is malformed: ${elide(sequences.error.issues[0]!.message)}`);
    if (opts.into !== undefined && sequences.data.length !== 1)
      refuse(`it holds ${sequences.data.length} sequences; 'into' restores a file holding one`);
    const plan = sequences.data.map((s) => ({ from: s.slot, into: opts.into ?? s.slot, length: s.length }));
    for (const p of plan) {
      if (!Number.isInteger(p.into) || p.into < 0 || p.into >= memory.options.slots)
        refuse(`sequence of slot ${p.from} would go into slot ${p.into}; this session has slots 0..${memory.options.slots - 1}`);
      if (p.length > memory.options.capacity) refuse(`sequence of slot ${p.from} holds ${p.length} positions; this session's capacity is ${memory.options.capacity}`);
    }
    if (new Set(plan.map((p) => p.into)).size !== plan.length) refuse('two sequences would go into the same slot');
    const expected = new Map<string, { shape: number[]; dtype: string }>();
    for (const p of plan) for (const t of memory.slotTensors(p.into, p.length)) expected.set(`seq${p.from}.${t.name}`, t);
    for (const name of source.tensorNames()) if (!expected.has(name)) refuse(`unexpected tensor ${JSON.stringify(elide(name, 200))}`);
    for (const [name, want] of expected) {
      if (!source.has(name)) refuse(`tensor "${name}" is missing`);
      const got = source.info(name);
      if (got.dtype !== want.dtype || got.shape.join() !== want.shape.join())
        refuse(`tensor "${name}" is ${got.dtype} [${got.shape.join(', ')}], expected ${want.dtype} [${want.shape.join(', ')}]`);
    }
    const tensors: NamedBytes[] = [];
    for (const name of expected.keys()) {
      const t = await source.readTensor(name);
      tensors.push({ name, dtype: t.dtype, shape: t.shape, bytes: t.bytes });
    }
    const sum = checksum(tensors);
    if (sum !== md['strata.checksum']) refuse(`checksum mismatch (file says ${(md['strata.checksum'] ?? 'none').slice(0, 12)}, contents hash to ${sum.slice(0, 12)}): the file is corrupted`);
    const bytesOf = new Map(tensors.map((t) => [t.name, t.bytes]));
    for (const p of plan) {
      const pos = bytesOf.get(`seq${p.from}.pos`)!;
      const value = new DataView(pos.buffer, pos.byteOffset, 4).getInt32(0, true);
      if (value !== p.length) refuse(`sequence of slot ${p.from}: position tensor says ${value}, metadata says ${p.length}`);
    }
    // Validated: only now does the live session change.
    for (const p of plan) {
      const prefix = `seq${p.from}.`;
      const data = new Map<string, Uint8Array>();
      for (const [name, bytes] of bytesOf) if (name.startsWith(prefix)) data.set(name.slice(prefix.length), bytes);
      memory.writeSlot(p.into, p.length, data);
    }
    return { file, sequences: plan };
  } catch (error) {
    if (error instanceof RestoreError || !isUserError(error)) throw error; // a bug keeps its own type and stack
    throw new RestoreError(`${file}: cannot restore session memory: ${error.message}`);
  } finally {
    await source.close();
  }
}
