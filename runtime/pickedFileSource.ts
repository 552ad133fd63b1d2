// Model files a user picked in a page as a ModelSource: an <input type=file webkitdirectory> list of Files, or a
// FileSystemDirectoryHandle (showDirectoryPicker, OPFS). Ranges are read with Blob.slice, so a shard is never
// loaded whole into memory.
import { type ModelSource, type SourceFileInfo, SourceChangedError, SourceReadError } from '../base/modelSource.ts';

const versionOf = (file: File) => `${file.size}:${file.lastModified}`;

/** A source over named Files; `fileNamed` finds one (undefined when absent). */
abstract class BlobSource implements ModelSource {
  abstract readonly location: string;
  abstract list(): Promise<string[]>;
  protected abstract fileNamed(name: string): Promise<File | undefined>;

  where(name: string): string {
    return `${this.location}/${name}`;
  }

  private async file(name: string): Promise<File> {
    const file = await this.fileNamed(name);
    if (!file) throw new SourceReadError(this.where(name), 'not among the picked files', true);
    return file;
  }

  async stat(name: string): Promise<SourceFileInfo> {
    const file = await this.file(name);
    return { size: file.size, version: versionOf(file) };
  }

  async readRange(name: string, offset: number, length: number, version?: string): Promise<Uint8Array<ArrayBuffer>> {
    const file = await this.file(name);
    if (version !== undefined && versionOf(file) !== version) {
      throw new SourceChangedError(this.where(name), 'the file changed since its header was read (replaced or rewritten); pick it again');
    }
    if (offset + length > file.size) throw new SourceReadError(this.where(name), `unexpected end of file at byte ${file.size}`);
    return new Uint8Array(await file.slice(offset, offset + length).arrayBuffer());
  }

  async readText(name: string, maxBytes: number): Promise<string> {
    const file = await this.file(name);
    if (file.size > maxBytes) throw new SourceReadError(this.where(name), `is ${file.size} bytes, more than the ${maxBytes} read for this kind of file`);
    return file.text();
  }
}

/** Files from `<input type="file" webkitdirectory>` (or drag and drop): matched by their base name. */
export class FileListSource extends BlobSource {
  private readonly files = new Map<string, File>();
  readonly location: string;

  constructor(files: Iterable<File> | ArrayLike<File>, location?: string) {
    super();
    const list = Array.from(files as ArrayLike<File>);
    for (const file of list) this.files.set(file.name, file);
    // webkitRelativePath is "folder/file": name the source after the folder
    this.location = location ?? (list[0]?.webkitRelativePath.split('/')[0] || 'picked files');
  }

  async list(): Promise<string[]> {
    return [...this.files.keys()];
  }

  protected async fileNamed(name: string): Promise<File | undefined> {
    return this.files.get(name);
  }
}

/** A folder handle from showDirectoryPicker() or the origin-private file system (navigator.storage.getDirectory()). */
export class DirectoryHandleSource extends BlobSource {
  readonly location: string;

  constructor(private readonly handle: FileSystemDirectoryHandle) {
    super();
    this.location = handle.name || 'opfs'; // the origin-private file system's root has no name
  }

  async list(): Promise<string[]> {
    const names: string[] = [];
    for await (const [name, entry] of (this.handle as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }).entries()) {
      if (entry.kind === 'file') names.push(name);
    }
    return names;
  }

  protected async fileNamed(name: string): Promise<File | undefined> {
    try {
      return await (await this.handle.getFileHandle(name)).getFile();
    } catch (error) {
      if ((error as DOMException).name === 'NotFoundError' || (error as DOMException).name === 'TypeMismatchError') return undefined;
      throw new SourceReadError(this.where(name), (error as Error).message);
    }
  }
}
