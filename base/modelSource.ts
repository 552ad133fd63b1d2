// Where a model's files come from: a folder on disk (Node), a web server (fetch with HTTP range requests), or files a
// user picked in a browser. Loaders read through this interface only, so the same code loads in Node and in a page.

/** A file of a source: its size, and a token that changes when the file is replaced or rewritten. */
export interface SourceFileInfo {
  size: number;
  version: string;
}

export interface ModelSource {
  /** The folder or URL as given, for messages. */
  readonly location: string;
  /** How a file of this source is named in messages (a path or a URL). */
  where(name: string): string;
  /** Names of the files in the folder (no sub-folders). */
  list(): Promise<string[]>;
  /** Size and version of a regular file; a SourceReadError (with `missing` when it does not exist) otherwise. */
  stat(name: string): Promise<SourceFileInfo>;
  /**
   * Exactly `length` bytes from `offset` of a file. With `version`, refuses (SourceChangedError) a file that is no
   * longer the one `stat` described. Only this range is held in memory, never the whole file.
   */
  readRange(name: string, offset: number, length: number, version?: string): Promise<Uint8Array<ArrayBuffer>>;
  /** A whole text file (UTF-8), refused unread when larger than `maxBytes`. */
  readText(name: string, maxBytes: number): Promise<string>;
}

/** A read that failed: `reason` is the short cause a loader puts in its own typed message. */
export class SourceReadError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
    /** The file does not exist (as opposed to existing and being unreadable). */
    readonly missing = false,
  ) {
    super(`${file}: ${reason}`);
  }
}

/** Whether a file exists in a source; other failures (a FIFO, a server error) are thrown. */
export async function sourceHas(source: ModelSource, name: string): Promise<boolean> {
  try {
    await source.stat(name);
    return true;
  } catch (error) {
    if (error instanceof SourceReadError && error.missing) return false;
    throw error;
  }
}

/** A file that changed between reading its header and reading its data. */
export class SourceChangedError extends SourceReadError {}

/** The parsed JSON of a text file of a source (a SourceReadError names the file when it is not JSON). */
export async function readSourceJson(source: ModelSource, name: string, maxBytes: number): Promise<unknown> {
  const text = await source.readText(name, maxBytes);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new SourceReadError(source.where(name), `not valid JSON (${(error as Error).message})`);
  }
}

export function isModelSource(value: unknown): value is ModelSource {
  return typeof value === 'object' && value !== null && typeof (value as ModelSource).readRange === 'function' && typeof (value as ModelSource).list === 'function';
}

/** `base` and `name` joined with one '/', for sources whose names are URL or path suffixes. */
export function joinLocation(base: string, name: string): string {
  return `${base.replace(/\/+$/, '')}/${name}`;
}

/** A short reason for a failed read, for a message: the source's reason, an errno code, or the error's message. */
export function readFailureReason(error: unknown): string {
  if (error instanceof SourceReadError) return error.reason;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  return error instanceof Error ? error.message : String(error);
}
