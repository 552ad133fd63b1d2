// Opening files a user names (checkpoints, configs, tokenizers, session files) without trusting what they are:
// only regular files are read, and the open itself never blocks (a FIFO would wait for a writer forever).

import { constants, promises as fsp } from 'node:fs';

/** Why a path cannot be read as a regular file, in words; null if it can. */
export function notRegularReason(stats: { isFile(): boolean; isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }): string | null {
  if (stats.isFile()) return null;
  if (stats.isDirectory()) return 'is a folder, not a file';
  if (stats.isFIFO()) return 'is a named pipe (FIFO), not a regular file';
  if (stats.isSocket()) return 'is a socket, not a regular file';
  return 'is not a regular file';
}

export class NotAFileError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
  }
}

/**
 * Opens `file` for reading only if it is a regular file (symbolic links are followed, then checked).
 * O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat then refuses it.
 * Throws NotAFileError, or the system error (ENOENT, EACCES, ...) of the open.
 */
export async function openRegularFile(file: string): Promise<fsp.FileHandle> {
  const handle = await fsp.open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  let reason: string | null;
  try {
    reason = notRegularReason(await handle.stat());
  } catch (error) {
    await handle.close();
    throw error;
  }
  if (reason !== null) {
    await handle.close();
    throw new NotAFileError(file, reason);
  }
  return handle;
}

/** The text of a regular file, at most `maxBytes` long (a larger file is refused, not read). */
export async function readRegularTextFile(file: string, maxBytes = 1 << 30): Promise<string> {
  const handle = await openRegularFile(file);
  try {
    const { size } = await handle.stat();
    if (size > maxBytes) throw new NotAFileError(file, `is ${size} bytes, more than the ${maxBytes} read for this kind of file`);
    return await handle.readFile({ encoding: 'utf8' });
  } finally {
    await handle.close();
  }
}

/** A short reason for a failed open or read, for a message: the errno code, or what the file is instead. */
export function describeReadFailure(error: unknown): string {
  if (error instanceof NotAFileError) return error.reason;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EISDIR') return 'is a folder, not a file';
  return code ?? (error instanceof Error ? error.message : String(error));
}
