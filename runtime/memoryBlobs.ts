// Session memory saved and restored without a file system: to a Blob (download it, keep it in IndexedDB) and to a
// FileSystemFileHandle (the browser's origin-private file system, or a file the user picked to save to). Same
// format, checks and refusals as saveMemory/restoreMemory. Session.save/restore take these targets too.
import type { HybridMemory } from '../caches/hybridMemory.ts';
import { type RestoredMemory, type SavedMemory, encodeMemory, restoreMemory } from '../caches/sessionFile.ts';
import { FileListSource } from './pickedFileSource.ts';
import { serializeSafetensors } from '../base/safetensorsWrite.ts';

/** A file handle (File System Access API), told apart from a Blob and a path. */
export const isFileHandle = (value: unknown): value is FileSystemFileHandle =>
  typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'file' && typeof (value as { getFile?: unknown }).getFile === 'function';

async function encodeBlob(memory: HybridMemory, opts: { slots?: number[] }): Promise<{ blob: Blob; sequences: SavedMemory['sequences'] }> {
  const { tensors, metadata, sequences } = await encodeMemory(memory, opts);
  return { blob: new Blob([serializeSafetensors(tensors, metadata)], { type: 'application/octet-stream' }), sequences };
}

/** The memory of some slots (default: all) as a Blob holding a memory file. One readback. */
export async function saveMemoryToBlob(memory: HybridMemory, opts: { slots?: number[] } = {}): Promise<Blob> {
  return (await encodeBlob(memory, opts)).blob;
}

/** Restores a Blob from saveMemoryToBlob (or a memory file the user picked); refused whole if anything is off. */
export async function restoreMemoryFromBlob(memory: HybridMemory, blob: Blob, opts: { into?: number; name?: string; location?: string } = {}): Promise<RestoredMemory> {
  const name = opts.name ?? (blob instanceof File ? blob.name : 'memory.safetensors');
  const file = blob instanceof File && blob.name === name ? blob : new File([blob], name);
  // messages name the file as location/name
  return restoreMemory(memory, { source: new FileListSource([file], opts.location ?? 'blob'), name }, opts.into === undefined ? {} : { into: opts.into });
}

/**
 * Writes the memory into a file handle. createWritable writes to a swap file that replaces the file on close, so a
 * failed save leaves the previous file as it was.
 */
export async function saveMemoryToHandle(memory: HybridMemory, handle: FileSystemFileHandle, opts: { slots?: number[] } = {}): Promise<SavedMemory> {
  const { blob, sequences } = await encodeBlob(memory, opts);
  const writable = await handle.createWritable();
  try {
    await writable.write(blob);
    await writable.close();
  } catch (error) {
    await writable.abort();
    throw error;
  }
  return { file: handle.name, bytes: blob.size, sequences };
}

export async function restoreMemoryFromHandle(memory: HybridMemory, handle: FileSystemFileHandle, opts: { into?: number } = {}): Promise<RestoredMemory> {
  return restoreMemoryFromBlob(memory, await handle.getFile(), { ...opts, location: 'opfs' });
}

const opfsFile = async (name: string, create: boolean) => (await navigator.storage.getDirectory()).getFileHandle(name, { create });

/** Writes the memory to `name` in the origin-private file system (see saveMemoryToHandle). */
export async function saveMemoryToOpfs(memory: HybridMemory, name: string, opts: { slots?: number[] } = {}): Promise<SavedMemory> {
  return saveMemoryToHandle(memory, await opfsFile(name, true), opts);
}

export async function restoreMemoryFromOpfs(memory: HybridMemory, name: string, opts: { into?: number } = {}): Promise<RestoredMemory> {
  return restoreMemoryFromHandle(memory, await opfsFile(name, false), opts);
}
