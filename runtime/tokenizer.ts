// Text <-> token ids for a Hugging Face model folder: @huggingface/tokenizers for tokenizer.json, a streaming
// decoder that never splits a multi-byte character, and chat templates rendered with @huggingface/jinja.

import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { StrataUserError, elide } from '../base/errors.ts';
import { type ModelSource, SourceReadError, isModelSource, readFailureReason } from '../base/modelSource.ts';
import { sourceFor } from '../base/defaultSource.ts';

export class TokenizerError extends StrataUserError {
  override name = 'TokenizerError';
}

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** Append the assistant turn's opening so the model answers next (HF's add_generation_prompt). Default true. */
  addGenerationPrompt?: boolean;
  /** Which named template when tokenizer_config.json holds several; default "default". */
  templateName?: string;
  tools?: unknown[];
  documents?: unknown[];
  /** Further variables the template reads (e.g. enable_thinking). */
  variables?: Record<string, unknown>;
}

export interface DecodeOptions {
  /** Drop special tokens (eos, bos, ...) from the text. Default false, as HF's decode. */
  skipSpecialTokens?: boolean;
}

type JsonObject = Record<string, unknown>;

/** tokenizer_config.json writes special tokens as a string or as a serialized AddedToken {content, ...}. */
function specialTokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as JsonObject).content === 'string') {
    return (value as JsonObject).content as string;
  }
  return null;
}

/** Larger than any tokenizer file; a bigger one is refused unread. */
const MAX_TOKENIZER_BYTES = 1 << 30;

/** The text of a tokenizer file; null when an optional one is absent. Only regular files are read. */
async function readOptionalText(source: ModelSource, name: string, required: boolean): Promise<string | null> {
  try {
    return await source.readText(name, MAX_TOKENIZER_BYTES);
  } catch (error) {
    if (!required && error instanceof SourceReadError && error.missing) return null;
    throw new TokenizerError(`${source.where(name)}: cannot read (${readFailureReason(error)})`);
  }
}

async function readJson(source: ModelSource, name: string, required: boolean): Promise<JsonObject | null> {
  const file = source.where(name);
  const text = await readOptionalText(source, name, required);
  if (text === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new TokenizerError(`${file}: not valid JSON (${elide((error as Error).message)})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TokenizerError(`${file}: expected a JSON object at the top level`);
  }
  return json as JsonObject;
}

export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly bosTokenId: number | null;
  /** The first of eosTokenIds, or null. */
  readonly eosTokenId: number | null;
  /** Ids that end generation according to the tokenizer files (the model's generation config may add more). */
  readonly eosTokenIds: number[];
  readonly padTokenId: number | null;
  /** Number of ids, added tokens included. */
  readonly vocabSize: number;
  private readonly inner: HfTokenizer;
  private readonly chatTemplates: Map<string, string>;
  private readonly specialIds: Set<number>;

  constructor(
    tokenizerJson: JsonObject,
    tokenizerConfig: JsonObject = {},
    /** Where the files came from, for error messages. */
    readonly source = 'tokenizer.json',
    /** A chat template from a separate chat_template.jinja (transformers 5); wins over tokenizer_config's. */
    chatTemplateFile?: string,
  ) {
    // The library trusts its input: any failure while building from these files is the files' fault.
    const built = (() => {
      try {
        const inner = new HfTokenizer(tokenizerJson, tokenizerConfig);
        const idOf = (token: string | null): number | null => (token === null ? null : (inner.token_to_id(token) ?? null));
        let largestId = -1;
        for (const id of inner.get_vocab(true).values()) largestId = Math.max(largestId, id);
        const specialIds = new Set(
          [...inner.get_added_tokens_decoder().entries()].filter(([, token]) => token.special).map(([id]) => id),
        );
        return { inner, idOf, vocabSize: largestId + 1, specialIds };
      } catch (error) {
        throw new TokenizerError(`${source}: cannot build the tokenizer (${elide(String((error as Error)?.message ?? error))})`);
      }
    })();
    this.inner = built.inner;
    this.bosToken = specialTokenText(tokenizerConfig.bos_token);
    this.eosToken = specialTokenText(tokenizerConfig.eos_token);
    this.padToken = specialTokenText(tokenizerConfig.pad_token);
    this.bosTokenId = built.idOf(this.bosToken);
    const eosId = built.idOf(this.eosToken);
    this.eosTokenIds = eosId === null ? [] : [eosId];
    this.eosTokenId = this.eosTokenIds[0] ?? null;
    this.padTokenId = built.idOf(this.padToken);
    this.vocabSize = built.vocabSize;
    this.specialIds = built.specialIds;

    this.chatTemplates = new Map();
    const configured = tokenizerConfig.chat_template;
    if (typeof configured === 'string') {
      this.chatTemplates.set('default', configured);
    } else if (Array.isArray(configured)) {
      for (const entry of configured as { name?: unknown; template?: unknown }[]) {
        if (typeof entry?.name === 'string' && typeof entry.template === 'string') {
          this.chatTemplates.set(entry.name, entry.template);
        }
      }
    }
    if (chatTemplateFile !== undefined) this.chatTemplates.set('default', chatTemplateFile);
  }

  /** Reads tokenizer.json, and tokenizer_config.json and chat_template.jinja when present, from a model folder or source. */
  static async load(folder: string | ModelSource): Promise<Tokenizer> {
    const source = isModelSource(folder) ? folder : sourceFor(folder);
    const tokenizerFile = source.where('tokenizer.json');
    const tokenizerJson = (await readJson(source, 'tokenizer.json', true))!;
    const tokenizerConfig = (await readJson(source, 'tokenizer_config.json', false)) ?? {};
    const chatTemplateFile = (await readOptionalText(source, 'chat_template.jinja', false)) ?? undefined;
    return new Tokenizer(tokenizerJson, tokenizerConfig, tokenizerFile, chatTemplateFile);
  }

  /** Token ids of `text`. Special tokens the post-processor adds (e.g. bos) are included unless disabled. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    let ids: number[];
    try {
      ids = this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
    } catch (error) {
      throw new TokenizerError(`${this.source}: cannot encode the text (${elide(String((error as Error)?.message ?? error))})`);
    }
    // a vocabulary that is not a map of strings to ids lets the library return tokens without an id
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0);
    if (bad >= 0) throw new TokenizerError(`${this.source}: the text encodes to a token without a valid id (${elide(String(ids[bad]), 40)}): is model.vocab broken?`);
    return ids;
  }

  decode(ids: readonly number[] | Int32Array | Uint32Array, options: DecodeOptions = {}): string {
    if (ids.length === 0) return ''; // the library rejects an empty list
    try {
      return this.inner.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? false });
    } catch (error) {
      throw new TokenizerError(`${this.source}: cannot decode ${ids.length} ids (${elide(String((error as Error)?.message ?? error))})`);
    }
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** A decoder for ids that arrive one (or a few) at a time. */
  createStreamDecoder(options: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplates.size > 0;
  }

  /** Renders the model's chat template (HF's apply_chat_template with tokenize=False). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    const name = options.templateName ?? 'default';
    const source = this.chatTemplates.get(name);
    if (source === undefined) {
      const available = [...this.chatTemplates.keys()];
      throw new TokenizerError(
        available.length === 0
          ? `${this.source}: this tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)`
          : `${this.source}: no chat template named "${name}"; available: ${available.join(', ')}`,
      );
    }
    let template: Template;
    try {
      template = new Template(source);
    } catch (error) {
      throw new TokenizerError(`${this.source}: chat template "${name}" does not parse (${(error as Error).message})`);
    }
    try {
      return template.render({
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? true,
        bos_token: this.bosToken ?? '',
        eos_token: this.eosToken ?? '',
        pad_token: this.padToken ?? '',
        ...(options.tools ? { tools: options.tools } : {}),
        ...(options.documents ? { documents: options.documents } : {}),
        ...options.variables,
      });
    } catch (error) {
      throw new TokenizerError(`${this.source}: chat template "${name}" failed to render (${(error as Error).message})`);
    }
  }
}

/**
 * Turns ids into text as they arrive. A byte-level BPE token can hold part of a UTF-8 character, so text is only
 * emitted once it decodes without a trailing U+FFFD; and it is decoded with a few preceding tokens as context,
 * because some decoders (Metaspace, WordPiece) render a token differently at the start of a string.
 * The same scheme as HF text-generation-inference's `decode_token`.
 */
export class StreamDecoder {
  private readonly ids: number[] = [];
  /** Start of the context window: ids before it are never decoded again. */
  private prefixOffset = 0;
  /** End of what has been emitted. */
  private readOffset = 0;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly options: DecodeOptions = {},
  ) {}

  /** Adds ids; returns the text they complete (possibly ''). */
  push(idOrIds: number | readonly number[]): string {
    if (typeof idOrIds === 'number') this.ids.push(idOrIds);
    else this.ids.push(...idOrIds);
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.options);
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.options);
    if (fullText.length > prefixText.length && !fullText.endsWith('\uFFFD')) {
      // Keep a little context (the just-emitted ids) so the next decode renders boundaries as the full text would.
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.ids.splice(0, this.prefixOffset); // ids before the window are never needed again
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
      return fullText.slice(prefixText.length);
    }
    return '';
  }

  /** Emits whatever is still held back (an incomplete character decodes as U+FFFD) and resets. */
  flush(): string {
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.options);
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.options);
    this.ids.length = 0;
    this.prefixOffset = 0;
    this.readOffset = 0;
    return fullText.slice(prefixText.length);
  }
}
