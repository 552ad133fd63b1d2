// A model folder on a web server as a ModelSource: small files with GET, checkpoint bytes with HTTP range requests,
// so a page reading a 1 GB shard holds one tensor at a time, never the shard. Works in browsers and in Node (fetch).
import { type ModelSource, type SourceFileInfo, SourceChangedError, SourceReadError, joinLocation } from './modelSource.ts';

/** Files a Hugging Face model folder may hold; a server cannot list a folder, so `list()` asks for these by name. */
const WELL_KNOWN_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'model.safetensors', 'model.safetensors.index.json'];

export interface FetchSourceOptions {
  /** The files of the folder, when known (skips probing by name in `list()`). */
  files?: string[];
  /** Replaces globalThis.fetch (tests, custom headers). */
  fetch?: typeof fetch;
}

export class FetchSource implements ModelSource {
  private readonly fetch: typeof fetch;

  constructor(
    /** The folder's URL (absolute, or relative to the page). */
    readonly location: string,
    private readonly options: FetchSourceOptions = {},
  ) {
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  where(name: string): string {
    return joinLocation(this.location, name);
  }

  private async request(name: string, init: RequestInit): Promise<Response> {
    let response: Response;
    try {
      // once more on a network error: a kept-alive connection the server closed as it was reused (ECONNRESET)
      response = await this.fetch(this.where(name), init).catch(() => this.fetch(this.where(name), init));
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause; // undici: "fetch failed" + the cause
      throw new SourceReadError(this.where(name), `request failed (${(error as Error).message ?? error}${cause ? `: ${cause.code ?? cause.message}` : ''})`);
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      throw new SourceReadError(this.where(name), `HTTP ${response.status} (not found)`, true);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new SourceReadError(this.where(name), `HTTP ${response.status} ${response.statusText}`.trim());
    }
    return response;
  }

  async list(): Promise<string[]> {
    if (this.options.files) return [...this.options.files];
    const found = await Promise.all(WELL_KNOWN_FILES.map((name) => this.stat(name).then(() => name, () => null)));
    const names = found.filter((name): name is string => name !== null);
    if (names.includes('model.safetensors.index.json')) {
      const index = JSON.parse(await this.readText('model.safetensors.index.json', 100_000_000)) as { weight_map?: Record<string, string> };
      names.push(...new Set(Object.values(index.weight_map ?? {})));
    }
    return names;
  }

  async stat(name: string): Promise<SourceFileInfo> {
    const response = await this.request(name, { method: 'HEAD' });
    const size = Number(response.headers.get('content-length'));
    if (!Number.isSafeInteger(size)) throw new SourceReadError(this.where(name), 'the server sent no Content-Length, so the file size is unknown');
    return { size, version: versionOf(response, size) };
  }

  async readRange(name: string, offset: number, length: number, version?: string): Promise<Uint8Array<ArrayBuffer>> {
    if (length === 0) return new Uint8Array(0);
    const response = await this.request(name, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
    if (response.status !== 206) {
      // a 200 would be the whole file: stop reading it
      await response.body?.cancel();
      throw new SourceReadError(this.where(name), `the server answered a range request with HTTP ${response.status}, not 206: it must support Range requests`);
    }
    const total = Number(/\/(\d+)$/.exec(response.headers.get('content-range') ?? '')?.[1]);
    if (version !== undefined && Number.isSafeInteger(total) && versionOf(response, total) !== version) {
      await response.body?.cancel();
      throw new SourceChangedError(this.where(name), 'the file changed since its header was read (replaced or rewritten); open it again');
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.byteLength !== length) {
      throw new SourceReadError(this.where(name), `asked for ${length} bytes at ${offset}, got ${bytes.byteLength} (file shorter than its header says?)`);
    }
    return bytes;
  }

  async readText(name: string, maxBytes: number): Promise<string> {
    const response = await this.request(name, {});
    const declared = Number(response.headers.get('content-length'));
    if (Number.isSafeInteger(declared) && declared > maxBytes) {
      await response.body?.cancel();
      throw new SourceReadError(this.where(name), `is ${declared} bytes, more than the ${maxBytes} read for this kind of file`);
    }
    const text = await response.text();
    if (text.length > maxBytes) throw new SourceReadError(this.where(name), `is more than the ${maxBytes} bytes read for this kind of file`);
    return text;
  }
}

/** What identifies a version of a file on a server: its ETag, else Last-Modified, with the size. */
function versionOf(response: Response, size: number): string {
  return `${response.headers.get('etag') ?? response.headers.get('last-modified') ?? ''}:${size}`;
}
