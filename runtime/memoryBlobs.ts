// Session memory saved and restored without a file system: to a Blob (download it, keep it in IndexedDB) and to the
// browser's origin-private file system (OPFS). Same format, checks and refusals as saveMemory/restoreMemory.
import type { HybridMemory } from '../caches/hybridMemory.ts';
import { type RestoredMemory, encodeMemory, restoreMemory } from '../caches/sessionFile.ts';
import { DirectoryHandleSource, FileListSource } from './pickedFileSource.ts';
import { serializeSafetensors } from '../base/safetensors.ts';

/** The memory of some slots (default: all) as a Blob holding a memory file. One readback. */
export async function saveMemoryToBlob(memory: HybridMemory, opts: { slots?: number[] } = {}): Promise<Blob> {
  const { tensors, metadata } = await encodeMemory(memory, opts);
  return new Blob([serializeSafetensors(tensors, metadata)], { type: 'application/octet-stream' });
}

/** Restores a Blob from saveMemoryToBlob (or a memory file the user picked); refused whole if anything is off. */
export async function restoreMemoryFromBlob(memory: HybridMemory, blob: Blob, opts: { into?: number; name?: string } = {}): Promise<RestoredMemory> {
  const name = opts.name ?? (blob instanceof File ? blob.name : 'memory.safetensors');
  const file = blob instanceof File && blob.name === name ? blob : new File([blob], name);
  return restoreMemory(memory, { source: new FileListSource([file], 'blob'), name }, opts.into === undefined ? {} : { into: opts.into });
}

/**
 * Writes the memory to `name` in the origin-private file system. createWritable writes to a swap file that replaces
 * the file on close, so a failed save leaves the previous file as it was.
 */
export async function saveMemoryToOpfs(memory: HybridMemory, name: string, opts: { slots?: number[] } = {}): Promise<void> {
  const blob = await saveMemoryToBlob(memory, opts);
  const root = await navigator.storage.getDirectory();
  const writable = await (await root.getFileHandle(name, { create: true })).createWritable();
  try {
    await writable.write(blob);
    await writable.close();
  } catch (error) {
    await writable.abort();
    throw error;
  }
}

export async function restoreMemoryFromOpfs(memory: HybridMemory, name: string, opts: { into?: number } = {}): Promise<RestoredMemory> {
  return restoreMemory(memory, { source: new DirectoryHandleSource(await navigator.storage.getDirectory()), name }, opts);
}
