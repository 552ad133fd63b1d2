// Writes safetensors files: the header planned from the tensors, the file written to a temporary beside the target
// and renamed over it (temporaries of dead processes are removed first), or the whole file serialised in memory.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DTYPE_BYTES, SafetensorsError, type SafetensorsDtype, elementCount, isSafetensorsDtype } from './safetensors.ts';

export interface TensorToWrite {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: ArrayBufferView;
}

function viewBytes(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

interface PlannedFile {
  header: Uint8Array<ArrayBuffer>; // length prefix + JSON padded with spaces to a multiple of 8
  parts: Uint8Array[];
  dataLength: number;
}

function planSafetensors(
  tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): PlannedFile {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, tensor] of entries) {
    if (name === '__metadata__') throw new SafetensorsError(`cannot write a tensor named "__metadata__"`);
    if (!isSafetensorsDtype(tensor.dtype)) throw new SafetensorsError(`tensor "${name}": unknown dtype ${String(tensor.dtype)}`);
    const expected = elementCount(tensor.shape) * DTYPE_BYTES[tensor.dtype];
    if (tensor.data.byteLength !== expected) {
      throw new SafetensorsError(
        `tensor "${name}": ${tensor.dtype} [${tensor.shape.join(', ')}] needs ${expected} bytes, data has ${tensor.data.byteLength}`,
      );
    }
    header[name] = { dtype: tensor.dtype, shape: [...tensor.shape], data_offsets: [offset, offset + expected] };
    parts.push(viewBytes(tensor.data));
    offset += expected;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const paddedLength = Math.ceil(json.byteLength / 8) * 8;
  const headerBytes = new Uint8Array(8 + paddedLength);
  new DataView(headerBytes.buffer).setBigUint64(0, BigInt(paddedLength), true);
  headerBytes.set(json, 8);
  headerBytes.fill(0x20, 8 + json.byteLength);
  return { header: headerBytes, parts, dataLength: offset };
}

/** The whole file in memory: 8-byte header length, JSON header padded with spaces to 8 bytes, data. */
export function serializeSafetensors(
  tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  const { header, parts, dataLength } = planSafetensors(tensors, metadata);
  const out = new Uint8Array(header.byteLength + dataLength);
  out.set(header, 0);
  let position = header.byteLength;
  for (const part of parts) {
    out.set(part, position);
    position += part.byteLength;
  }
  return out;
}

/** Temp files this process is writing now (a concurrent save of the same target must keep its own). */
const temporariesInFlight = new Set<string>();

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // alive, owned by another user
  }
}

/**
 * Removes `<file>.tmp-<pid>-<random>` files that an interrupted save of `file` left behind: those of a process
 * that no longer runs, and this process's own that no save is writing. Returns the paths removed.
 */
export async function removeStaleTemporaries(file: string): Promise<string[]> {
  const directory = path.dirname(file);
  const prefix = `${path.basename(file)}.tmp-`;
  let names: string[];
  try {
    names = await fsp.readdir(directory);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const match = /^(\d+)-[0-9a-z]+$/.exec(name.slice(prefix.length));
    if (!match) continue;
    const pid = Number(match[1]);
    const temporary = path.join(directory, name);
    if (pid === process.pid ? temporariesInFlight.has(temporary) : processIsAlive(pid)) continue;
    try {
      if (!(await fsp.lstat(temporary)).isFile()) continue;
      await fsp.rm(temporary, { force: true });
      removed.push(temporary);
    } catch {
      // gone already, or not ours to remove: the save itself does not depend on it
    }
  }
  return removed;
}

/**
 * Writes atomically (a temp file beside `file`, flushed, then renamed over it), tensor by tensor without a full
 * copy. Temp files of earlier saves of `file` that were killed midway are removed first.
 */
export async function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  const { header, parts } = planSafetensors(tensors, metadata);
  await removeStaleTemporaries(file);
  const temporary = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  temporariesInFlight.add(temporary);
  try {
    const handle = await fsp.open(temporary, 'w');
    try {
      let position = 0;
      for (const part of [header, ...parts]) {
        for (let written = 0; written < part.byteLength; ) {
          const { bytesWritten } = await handle.write(part, written, part.byteLength - written, position + written);
          written += bytesWritten;
        }
        position += part.byteLength;
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(temporary, file);
  } catch (error) {
    await fsp.rm(temporary, { force: true });
    throw error;
  } finally {
    temporariesInFlight.delete(temporary);
  }
}
