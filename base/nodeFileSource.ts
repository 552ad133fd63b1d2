// A model folder on disk as a ModelSource. Only regular files are read (base/files.ts), no descriptor stays open
// between calls, and each range read checks that the file is still the one its size and version came from.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { type ModelSource, type SourceFileInfo, SourceChangedError, SourceReadError } from './modelSource.ts';
import { describeReadFailure, notRegularReason, openRegularFile, readRegularTextFile } from './files.ts';

const versionOf = (stats: { dev: number; ino: number; size: number; mtimeMs: number }) => `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;

/** No such file: absent, or a path through something that is not a folder. */
const isMissing = (error: unknown) => ['ENOENT', 'ENOTDIR'].includes((error as NodeJS.ErrnoException).code ?? '');

export class NodeFileSource implements ModelSource {
  /** The folder, resolved. */
  readonly folder: string;

  constructor(readonly location: string) {
    this.folder = path.resolve(location);
  }

  where(name: string): string {
    return path.join(this.location, name);
  }

  private file(name: string): string {
    return path.join(this.folder, name);
  }

  async list(): Promise<string[]> {
    try {
      return (await fsp.readdir(this.folder, { withFileTypes: true })).filter((entry) => !entry.isDirectory()).map((entry) => entry.name);
    } catch (error) {
      throw new SourceReadError(this.location, describeReadFailure(error));
    }
  }

  async stat(name: string): Promise<SourceFileInfo> {
    let stats;
    try {
      stats = await fsp.stat(this.file(name));
    } catch (error) {
      throw new SourceReadError(this.where(name), describeReadFailure(error), isMissing(error));
    }
    const reason = notRegularReason(stats);
    if (reason !== null) throw new SourceReadError(this.where(name), reason);
    return { size: stats.size, version: versionOf(stats) };
  }

  async readRange(name: string, offset: number, length: number, version?: string): Promise<Uint8Array<ArrayBuffer>> {
    let handle: fsp.FileHandle;
    try {
      handle = await openRegularFile(this.file(name));
    } catch (error) {
      throw new SourceReadError(this.where(name), describeReadFailure(error));
    }
    try {
      if (version !== undefined && versionOf(await handle.stat()) !== version) {
        throw new SourceChangedError(this.where(name), 'the file changed since its header was read (replaced or rewritten); open it again');
      }
      const bytes = new Uint8Array(length);
      let filled = 0;
      while (filled < length) {
        const { bytesRead } = await handle.read(bytes, filled, length - filled, offset + filled);
        if (bytesRead === 0) throw new SourceReadError(this.where(name), `unexpected end of file at byte ${offset + filled} (file changed while open?)`);
        filled += bytesRead;
      }
      return bytes;
    } finally {
      await handle.close();
    }
  }

  async readText(name: string, maxBytes: number): Promise<string> {
    try {
      return await readRegularTextFile(this.file(name), maxBytes);
    } catch (error) {
      throw new SourceReadError(this.where(name), describeReadFailure(error), isMissing(error));
    }
  }
}
