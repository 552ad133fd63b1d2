// Reads safetensors checkpoints (single file or sharded with model.safetensors.index.json): headers validated
// strictly up front, tensor bytes read from the file on demand, never all at once. Writing is safetensorsWrite.ts,
// the conversion of tensor bytes to numbers tensorValues.ts.

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { StrataUserError, describeJson, elide } from './errors.ts';
import { type ModelSource, SourceChangedError, readFailureReason, sourceHas } from './modelSource.ts';
import { NodeFileSource } from './nodeFileSource.ts';

export class SafetensorsError extends StrataUserError {
  override name = 'SafetensorsError';
}

export const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BYTES;
/** llama.cpp's block-quantized types a GGUF tensor may have (runtime/quantize.ts reads them); never in safetensors. */
export type GgmlBlockDtype = 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q4_K';
export type TensorDtype = SafetensorsDtype | GgmlBlockDtype;

export function isSafetensorsDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.hasOwn(DTYPE_BYTES, value);
}

/** Where one tensor lives. `byteOffset` is absolute in `file` (header included). */
export interface TensorInfo {
  name: string;
  dtype: TensorDtype;
  shape: number[];
  byteOffset: number;
  byteLength: number;
  file: string;
}

export interface TensorData {
  dtype: TensorDtype;
  shape: number[];
  /** Owns its ArrayBuffer (byteOffset 0), so typed views over it are aligned. */
  bytes: Uint8Array<ArrayBuffer>;
}

/** What model loaders need from a checkpoint, whether it is one file or several shards. */
export interface TensorSource {
  readonly metadata: Readonly<Record<string, string>>;
  tensorNames(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  readTensor(name: string): Promise<TensorData>;
  close(): Promise<void>;
}

const MAX_HEADER_BYTES = 100_000_000;

export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** A tensor name as quoted in a message: bounded, so a hostile 20 MB name gives a short message. */
const quote = (name: string) => JSON.stringify(elide(name, 200));

/** Byte offset in `text` of the first object key that repeats within its object, or -1. Iterative. */
export function findDuplicateKey(text: string): { key: string; at: number } | null {
  // One Set of keys per open object; null for an open array. Strings are skipped whole.
  const open: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '"') {
      let end = i + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      const keys = open[open.length - 1];
      if (expectKey && keys) {
        let key: string;
        try {
          key = JSON.parse(text.slice(i, end + 1)) as string;
        } catch {
          return null; // not JSON: JSON.parse reports it
        }
        if (keys.has(key)) return { key, at: i };
        keys.add(key);
      }
      expectKey = false;
      i = end;
    } else if (char === '{') {
      open.push(new Set());
      expectKey = true;
    } else if (char === '[') {
      open.push(null);
    } else if (char === '}' || char === ']') {
      open.pop();
    } else if (char === ',') {
      expectKey = open[open.length - 1] != null;
    }
  }
  return null;
}

/**
 * Validates a header as the `safetensors` crate does. `headerBytes` is the JSON text (after the 8-byte length),
 * `dataLength` the size of the data region that follows it. Refused: a byte order mark, invalid UTF-8 or JSON, duplicate keys, unknown dtypes, shapes whose size overflows, offsets whose
 * span does not match the shape, and tensors that do not tile the data region exactly (no hole, no overlap, no
 * trailing bytes). Throws SafetensorsError naming `file` and the offending tensor, in a bounded message.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, dataLength: number, file: string): ParsedHeader {
  if (headerBytes[0] === 0xef && headerBytes[1] === 0xbb && headerBytes[2] === 0xbf) {
    throw new SafetensorsError(`${file}: header starts with a UTF-8 byte order mark; the JSON must start at the first byte`);
  }
  let text: string;
  let json: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
    json = JSON.parse(text);
  } catch (error) {
    throw new SafetensorsError(`${file}: header is not valid JSON (${elide((error as Error).message)})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new SafetensorsError(`${file}: header must be a JSON object, got ${describe(json)}`);
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate) {
    throw new SafetensorsError(`${file}: header has key ${quote(duplicate.key)} twice (at byte ${duplicate.at} of the header)`);
  }
  const dataStart = 8 + headerBytes.byteLength;
  const tensors = new Map<string, TensorInfo>();
  const metadata: Record<string, string> = {};
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null) continue; // the crate reads it as an Option
      if (typeof entry !== 'object' || Array.isArray(entry)) {
        throw new SafetensorsError(`${file}: __metadata__ must be an object of strings, got ${describe(entry)}`);
      }
      for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof value !== 'string') {
          throw new SafetensorsError(`${file}: __metadata__.${elide(key, 200)} must be a string, got ${describe(value)}`);
        }
        metadata[key] = value;
      }
      continue;
    }
    const where = `${file}: tensor ${quote(name)}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw new SafetensorsError(`${where}: entry must be an object, got ${describe(entry)}`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (!isSafetensorsDtype(dtype)) {
      throw new SafetensorsError(`${where}: dtype ${describeJson(dtype)} is not one of ${Object.keys(DTYPE_BYTES).join(', ')}`);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new SafetensorsError(`${where}: shape must be an array of non-negative integers, got ${describeJson(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
      throw new SafetensorsError(`${where}: data_offsets must be [begin, end] integers, got ${describeJson(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] has begin > end`);
    if (end > dataLength) {
      throw new SafetensorsError(
        `${where}: data_offsets [${begin}, ${end}] out of range: data region is ${dataLength} bytes`,
      );
    }
    const expected = elementCount(shape) * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected)) {
      throw new SafetensorsError(`${where}: shape ${elide(`[${shape.join(', ')}]`)} holds more elements than can be addressed`);
    }
    if (end - begin !== expected) {
      throw new SafetensorsError(
        `${where}: size mismatch: ${dtype} ${elide(`[${shape.join(', ')}]`)} needs ${expected} bytes, data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    tensors.set(name, { name, dtype, shape: [...shape], byteOffset: dataStart + begin, byteLength: end - begin, file });
    ranges.push({ name, begin, end });
  }
  // As the crate: in offset order each tensor starts where the previous one ended, and the last ends the file.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: (typeof ranges)[number] | undefined;
  for (const range of ranges) {
    if (range.begin < cursor) {
      throw new SafetensorsError(
        `${file}: tensor ${quote(range.name)} [${range.begin}, ${range.end}] overlaps tensor ${quote(previous!.name)} [${previous!.begin}, ${previous!.end}]`,
      );
    }
    if (range.begin > cursor) {
      throw new SafetensorsError(
        `${file}: ${range.begin - cursor} bytes [${cursor}, ${range.begin}) of the data region belong to no tensor (a hole before tensor ${quote(range.name)})`,
      );
    }
    cursor = range.end;
    previous = range;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(`${file}: ${dataLength - cursor} trailing bytes after the last tensor (data region is ${dataLength} bytes, tensors end at ${cursor})`);
  }
  return { tensors, metadata };
}

/**
 * One `.safetensors` file of a ModelSource. The header is read at open; each tensor is one range read, which the
 * source refuses when the file is no longer the one whose header was read (Node: no descriptor stays open between
 * calls; fetch: an HTTP range request, so a shard is never held whole in memory).
 */
export class SafetensorsFile implements TensorSource {
  private closed = false;

  private constructor(
    /** The file as named in messages. */
    readonly file: string,
    private readonly source: ModelSource,
    private readonly name: string,
    private readonly version: string,
    private readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  /** Opens a file by path (Node), or the file `name` of a source. */
  static async open(fileOrSource: string | ModelSource, name?: string): Promise<SafetensorsFile> {
    const source = typeof fileOrSource === 'string' ? new NodeFileSource(path.dirname(fileOrSource)) : fileOrSource;
    const fileName = typeof fileOrSource === 'string' ? path.basename(fileOrSource) : name!;
    const file = typeof fileOrSource === 'string' ? fileOrSource : source.where(fileName);
    let size: number;
    let version: string;
    let lengthBytes: Uint8Array;
    try {
      ({ size, version } = await source.stat(fileName));
      if (size < 8) throw new SafetensorsError(`${file}: file is ${size} bytes, too short for the 8-byte header length`);
      lengthBytes = await source.readRange(fileName, 0, 8, version);
    } catch (error) {
      if (error instanceof SafetensorsError) throw error;
      throw new SafetensorsError(`${file}: cannot open (${readFailureReason(error)})`);
    }
    const headerLength = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 8).getBigUint64(0, true);
    if (headerLength >= BigInt(MAX_HEADER_BYTES)) {
      throw new SafetensorsError(`${file}: header length ${headerLength} is not below the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (headerLength > BigInt(size - 8)) {
      throw new SafetensorsError(`${file}: header length ${headerLength} exceeds the file size ${size} (truncated or not a safetensors file)`);
    }
    const headerBytes = await readChecked(source, fileName, 8, Number(headerLength), version, file);
    const { tensors, metadata } = parseSafetensorsHeader(headerBytes, size - 8 - headerBytes.byteLength, file);
    return new SafetensorsFile(file, source, fileName, version, tensors, metadata);
  }

  tensorNames(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const found = this.tensors.get(name);
    if (!found) throw new SafetensorsError(`${this.file}: no tensor named ${quote(name)}`);
    return found;
  }

  async readTensor(name: string): Promise<TensorData> {
    if (this.closed) throw new SafetensorsError(`${this.file}: read of tensor ${quote(name)} after close()`);
    const { dtype, shape, byteOffset, byteLength } = this.info(name);
    const bytes = await readChecked(this.source, this.name, byteOffset, byteLength, this.version, `${this.file}: tensor ${quote(name)}`);
    return { dtype, shape: [...shape], bytes };
  }

  /** Refuses later reads; there is no descriptor to release. */
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A range of a checkpoint file; a failed or short read is a SafetensorsError naming `what`. */
async function readChecked(source: ModelSource, name: string, offset: number, length: number, version: string, what: string): Promise<Uint8Array<ArrayBuffer>> {
  try {
    const bytes = await source.readRange(name, offset, length, version);
    // owning its buffer from byte 0 keeps typed views over it aligned (TensorData.bytes)
    return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  } catch (error) {
    if (error instanceof SourceChangedError) throw new SafetensorsError(`${error.file}: ${error.reason}`);
    throw new SafetensorsError(`${what}: ${readFailureReason(error)}`);
  }
}

const shardIndexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).optional(),
  weight_map: z.record(z.string(), z.string()),
});

/** Why a weight_map value is not a plain file name inside the model folder; null if it is one. */
function shardNameProblem(name: string): string | null {
  if (name === '' || name === '.' || name === '..') return 'is not a file name';
  if (/[/\\\0]/.test(name)) return 'is not a plain file name in the model folder';
  return null;
}

/** A checkpoint split over several files, described by `model.safetensors.index.json`. */
export class ShardedSafetensors implements TensorSource {
  private constructor(
    readonly indexFile: string,
    private readonly shards: Map<string, SafetensorsFile>,
    private readonly weightMap: Map<string, SafetensorsFile>,
    readonly metadata: Readonly<Record<string, string>>,
    /** The index file's own `metadata` (e.g. total_size), as written. */
    readonly indexMetadata: Readonly<Record<string, unknown>>,
  ) {}

  /** Opens an index by path (Node), or the index file `name` of a source. */
  static async open(indexFileOrSource: string | ModelSource, name?: string): Promise<ShardedSafetensors> {
    const source = typeof indexFileOrSource === 'string' ? new NodeFileSource(path.dirname(indexFileOrSource)) : indexFileOrSource;
    const indexName = typeof indexFileOrSource === 'string' ? path.basename(indexFileOrSource) : name!;
    const indexFile = typeof indexFileOrSource === 'string' ? indexFileOrSource : source.where(indexName);
    let text: string;
    try {
      text = await source.readText(indexName, MAX_HEADER_BYTES);
    } catch (error) {
      throw new SafetensorsError(`${indexFile}: cannot read (${readFailureReason(error)})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new SafetensorsError(`${indexFile}: not valid JSON (${elide((error as Error).message)})`);
    }
    const parsed = shardIndexSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new SafetensorsError(`${indexFile}: ${elide(issue.path.join('.')) || '(root)'}: ${elide(issue.message)}`);
    }
    const weightEntries = Object.entries(parsed.data.weight_map);
    const shardNames = [...new Set(weightEntries.map(([, shard]) => shard))];
    const holding = (shardName: string) => quote(weightEntries.find(([, file]) => file === shardName)![0]);
    for (const shardName of shardNames) {
      const why = shardNameProblem(shardName);
      if (why) {
        throw new SafetensorsError(`${indexFile}: weight_map maps tensor ${holding(shardName)} to shard ${quote(shardName)}, which ${why}`);
      }
    }
    const shards = new Map<string, SafetensorsFile>();
    try {
      for (const shardName of shardNames) {
        if (!(await sourceHas(source, shardName).catch(() => true))) {
          throw new SafetensorsError(
            `${indexFile}: shard ${quote(shardName)} (holding tensor ${holding(shardName)} and others) not found at ${elide(source.where(shardName))}`,
          );
        }
        shards.set(shardName, await SafetensorsFile.open(source, shardName));
      }
      const weightMap = new Map<string, SafetensorsFile>();
      for (const [tensorName, shardName] of weightEntries) {
        const shard = shards.get(shardName)!;
        if (!shard.has(tensorName)) {
          throw new SafetensorsError(`${indexFile}: tensor ${quote(tensorName)} is mapped to shard ${quote(shardName)}, which does not contain it`);
        }
        weightMap.set(tensorName, shard);
      }
      const metadata: Record<string, string> = {};
      for (const shard of shards.values()) Object.assign(metadata, shard.metadata);
      return new ShardedSafetensors(indexFile, shards, weightMap, metadata, parsed.data.metadata ?? {});
    } catch (error) {
      await Promise.all([...shards.values()].map((shard) => shard.close()));
      throw error;
    }
  }

  tensorNames(): string[] {
    return [...this.weightMap.keys()];
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  private shardOf(name: string): SafetensorsFile {
    const shard = this.weightMap.get(name);
    if (!shard) throw new SafetensorsError(`${this.indexFile}: no tensor named ${quote(name)} in weight_map`);
    return shard;
  }

  info(name: string): TensorInfo {
    return this.shardOf(name).info(name);
  }

  readTensor(name: string): Promise<TensorData> {
    return this.shardOf(name).readTensor(name);
  }

  async close(): Promise<void> {
    await Promise.all([...this.shards.values()].map((shard) => shard.close()));
  }
}

/**
 * Opens a checkpoint: a `.safetensors` file, a `.index.json`, or a folder holding
 * `model.safetensors.index.json` (preferred) or `model.safetensors`.
 */
export async function openSafetensors(location: string | ModelSource): Promise<TensorSource> {
  if (typeof location !== 'string') return openSourceCheckpoint(location);
  if (location.endsWith('.json')) return ShardedSafetensors.open(location);
  let isDirectory = false;
  try {
    isDirectory = (await fsp.stat(location)).isDirectory();
  } catch {
    throw new SafetensorsError(`${location}: no such file or folder`);
  }
  if (!isDirectory) return SafetensorsFile.open(location);
  return openSourceCheckpoint(new NodeFileSource(location));
}

/** The checkpoint of a model folder: `model.safetensors.index.json` (preferred) or `model.safetensors`. */
async function openSourceCheckpoint(source: ModelSource): Promise<TensorSource> {
  const has = (name: string) => sourceHas(source, name).catch(() => true); // exists but unreadable: its open says why
  if (await has('model.safetensors.index.json')) return ShardedSafetensors.open(source, 'model.safetensors.index.json');
  if (await has('model.safetensors')) return SafetensorsFile.open(source, 'model.safetensors');
  throw new SafetensorsError(`${source.location}: neither model.safetensors.index.json nor model.safetensors found`);
}
