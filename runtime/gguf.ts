// GGUF files (llama.cpp's format) as a model: the header and metadata parsed by @huggingface/gguf, the config and
// tokenizer rebuilt in Hugging Face form from the metadata, and the tensors served under their HF names in HF
// layout (TensorSource), undoing what llama.cpp's converter changed (per architecture in runtime/ggufLayouts.ts:
// reversed dims, Q/K rows permuted for its RoPE, A stored as -exp(A_log), gate and up split, squeezed conv weights,
// Mamba-2's A/D/norm reshaped, experts or AltUp projections stacked into one 3-D tensor, zero-centred norms stored
// as w + 1, Qwen3-Next's q/k/v/z rows regrouped). Quantized tensors keep
// their blocks: Q8_0/Q4_0/Q4_1/Q4_K are repacked for the GPU by runtime/quantize.ts; Q5_0 (exact) and Q6_K
// (requantized) become Q8_0, the types llama-quantize falls back to for rows that are no multiple of 256.
import { gguf } from '@huggingface/gguf';
import { elide } from '../base/errors.ts';
import { describeReadFailure, openRegularFile } from '../base/files.ts';
import { type TensorData, type TensorDtype, type TensorInfo, type TensorSource } from '../base/safetensors.ts';
import { f16BitsToF32, toFloat32 } from '../base/tensorValues.ts';
import { GGUF_LAYOUTS, GgufError, type Meta, metaNumber as num, metaOptional as opt } from './ggufLayouts.ts';
import { GGML_BLOCKS, dequantize, isGgmlBlockDtype, quantizeGgmlQ8, repackGgml } from './quantize.ts';

/** GGML tensor types read here (ggml.h enum ggml_type), with their block shape. */
const GGML_TYPES: Record<number, { name: string; elements: number; bytes: number }> = {
  0: { name: 'F32', elements: 1, bytes: 4 },
  1: { name: 'F16', elements: 1, bytes: 2 },
  30: { name: 'BF16', elements: 1, bytes: 2 },
  2: { name: 'Q4_0', elements: 32, bytes: 18 },
  3: { name: 'Q4_1', elements: 32, bytes: 20 },
  6: { name: 'Q5_0', elements: 32, bytes: 22 },
  8: { name: 'Q8_0', elements: 32, bytes: 34 },
  12: { name: 'Q4_K', elements: 256, bytes: 144 },
  14: { name: 'Q6_K', elements: 256, bytes: 210 },
};

/** One GGUF tensor (or one expert of a stacked one): its type, dims in HF order (outermost first), where its bytes are. */
interface Part {
  gguf: string;
  type: string;
  shape: number[];
  offset: number;
  bytes: number;
}

/** How an HF tensor is made from GGUF tensors. */
interface Mapped {
  parts: Part[];
  shape: number[];
  /** Rows of [heads, 2, half] stored by the converter as [heads, half, 2] (LlamaModel.permute): the head count. */
  unpermuteHeads?: number;
  /** ssm_a holds -exp(A_log). */
  negExpLog?: boolean;
  /** A zero-centred norm's weight stored as w + 1. */
  minusOne?: boolean;
  /** HF row i is row rowOrder[i] of the parts' concatenation (the converter reordered rows). */
  rowOrder?: number[];
}

export { GgufError };
export const GGUF_ARCHITECTURES = Object.keys(GGUF_LAYOUTS);

/** A parsed GGUF file: an HF-form config.json object, tokenizer files, and its tensors under HF names. */
export interface GgufModel {
  config: Record<string, unknown>;
  tokenizer: { json: Record<string, unknown>; config: Record<string, unknown> } | undefined;
  checkpoint: TensorSource;
}

export async function openGguf(file: string): Promise<GgufModel> {
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    // only the header is read; the library reads local files through its own range reader
    parsed = await gguf(file, { allowLocalFile: true });
  } catch (error) {
    throw new GgufError(`${file}: not a readable GGUF file (${elide(describeReadFailure(error))})`);
  }
  const meta = parsed.metadata as unknown as Meta;
  const arch = String(meta['general.architecture']);
  const def = GGUF_LAYOUTS[arch];
  if (!def) throw new GgufError(`${file}: GGUF architecture "${elide(arch, 60)}" is not mapped to a Strata family (mapped: ${GGUF_ARCHITECTURES.join(', ')})`);
  const base = Number(parsed.tensorDataOffset);
  const parts = new Map<string, Part>();
  for (const t of parsed.tensorInfos) {
    const type = GGML_TYPES[t.dtype];
    if (!type) throw new GgufError(`${file}: tensor ${t.name} has GGML type ${t.dtype}, not one Strata reads (${Object.values(GGML_TYPES).map((x) => x.name).join(', ')})`);
    const dims = t.shape.map(Number);
    const count = dims.reduce((x, y) => x * y, 1);
    if (dims[0]! % type.elements !== 0) throw new GgufError(`${file}: tensor ${t.name} rows of ${dims[0]} are no whole ${type.name} blocks`);
    parts.set(t.name, { gguf: t.name, type: type.name, shape: [...dims].reverse(), offset: base + Number(t.offset), bytes: (count / type.elements) * type.bytes });
  }
  const has = (name: string) => parts.has(name);
  const shape = (name: string) => parts.get(name)?.shape;
  const tokens = meta['tokenizer.ggml.tokens'];
  const vocab = opt(meta, `${arch}.vocab_size`, Array.isArray(tokens) ? tokens.length : 0);
  const config = def.config(meta, arch, has, vocab, shape);
  if (Array.isArray(tokens) && meta['tokenizer.ggml.bos_token_id'] !== undefined) config.bos_token_id = num(meta, 'tokenizer.ggml.bos_token_id');
  if (meta['tokenizer.ggml.eos_token_id'] !== undefined) config.eos_token_id = num(meta, 'tokenizer.ggml.eos_token_id');

  const tensors = new Map<string, Mapped>();
  const kvHeads = (layer: number): number => {
    const kv = meta[`${arch}.attention.head_count_kv`];
    return Array.isArray(kv) ? Number(kv[layer]) : opt(meta, `${arch}.attention.head_count_kv`, num(meta, `${arch}.attention.head_count`));
  };
  const concatenated = new Set((def.concat ?? []).flatMap(([names]) => names));
  const flat = new Set(def.flat ?? []);
  const squeezed = new Set(def.squeezed ?? []);
  const shifted = new Set(def.shiftedNorms ?? []);
  /** [E, out, in]: slice e is the e-th run of out rows (whole rows, so whole quantized blocks). */
  const unstack = (part: Part, hfName: (e: number) => string) => {
    const [count, ...shape] = part.shape;
    for (let e = 0; e < count!; e++)
      tensors.set(hfName(e), { parts: [{ ...part, gguf: `${part.gguf}[${e}]`, shape, offset: part.offset + (e * part.bytes) / count!, bytes: part.bytes / count! }], shape });
  };
  for (const part of parts.values()) {
    const m = /^blk\.(\d+)\.(.+)$/.exec(part.gguf);
    if (!m) {
      const stacked = def.stacked?.[part.gguf];
      if (stacked) {
        unstack(part, (e) => stacked.replace('{e}', String(e)));
        continue;
      }
      const hf = def.top[part.gguf];
      if (!hf) throw new GgufError(`${file}: tensor ${part.gguf} has no mapping for architecture ${arch}`);
      tensors.set(hf, { parts: [part], shape: part.shape, ...(shifted.has(part.gguf) ? { minusOne: true } : {}) });
      continue;
    }
    const layer = Number(m[1]);
    const local = m[2]!;
    const prefix = `${def.layers}${layer}.`;
    if (concatenated.has(local)) continue;
    const stacked = def.stacked?.[local];
    if (stacked) {
      unstack(part, (e) => prefix + stacked.replace('{e}', String(e)));
      continue;
    }
    const hfLocal = def.block[local];
    if (!hfLocal) throw new GgufError(`${file}: tensor ${part.gguf} has no mapping for architecture ${arch}`);
    const mapped: Mapped = { parts: [part], shape: part.shape };
    if (def.permutedQK && local === 'attn_q.weight') mapped.unpermuteHeads = num(meta, `${arch}.attention.head_count`);
    if (def.permutedQK && local === 'attn_k.weight') mapped.unpermuteHeads = kvHeads(layer);
    if (local === 'ssm_a') mapped.negExpLog = true;
    if (shifted.has(local)) mapped.minusOne = true;
    if (flat.has(local)) mapped.shape = [part.shape.reduce((x, y) => x * y, 1)];
    if (squeezed.has(local)) mapped.shape = [part.shape[0]!, 1, part.shape[1]!];
    tensors.set(prefix + hfLocal, mapped);
  }
  for (const [names, hfLocal, rows] of def.concat ?? []) {
    for (let layer = 0; parts.has(`blk.${layer}.attn_norm.weight`); layer++) {
      const found = names.map((n) => parts.get(`blk.${layer}.${n}`));
      if (found.every((p) => !p)) continue;
      const missing = names.find((_, i) => !found[i]);
      if (missing) throw new GgufError(`${file}: blk.${layer}.${missing} is missing (needed with ${names.join(', ')})`);
      const ps = found as Part[];
      const shape = [ps.reduce((x, p) => x + p.shape[0]!, 0), ...ps[0]!.shape.slice(1)];
      const rowOrder = rows?.(meta, arch);
      if (rowOrder && rowOrder.length !== shape[0]) throw new GgufError(`${file}: blk.${layer}.${names.join(' + ')} hold ${shape[0]} rows, the layout orders ${rowOrder.length}`);
      tensors.set(`${def.layers}${layer}.${hfLocal}`, { parts: ps, shape, ...(rowOrder ? { rowOrder } : {}) });
    }
  }
  return { config, tokenizer: tokenizerFiles(meta, file), checkpoint: new GgufSource(file, tensors) };
}

/** The dtype a mapped tensor is served as: its parts' common type, Q5_0/Q6_K as Q8_0, F32 where parts differ or values change. */
function servedDtype(t: Mapped): TensorDtype {
  const types = new Set(t.parts.map((p) => (p.type === 'Q5_0' || p.type === 'Q6_K' ? 'Q8_0' : p.type)));
  if (types.size > 1 || t.negExpLog || t.minusOne) return 'F32';
  return [...types][0] as TensorDtype;
}

class GgufSource implements TensorSource {
  readonly metadata: Readonly<Record<string, string>> = {};
  constructor(
    readonly file: string,
    private readonly tensors: Map<string, Mapped>,
  ) {}

  tensorNames(): string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new GgufError(`${this.file}: no tensor maps to ${name}`);
    return { name, dtype: servedDtype(t), shape: t.shape, byteOffset: t.parts[0]!.offset, byteLength: t.parts.reduce((x, p) => x + p.bytes, 0), file: this.file };
  }

  async readTensor(name: string): Promise<TensorData> {
    const t = this.tensors.get(name);
    if (!t) throw new GgufError(`${this.file}: no tensor maps to ${name}`);
    const dtype = servedDtype(t);
    const pieces: Uint8Array[] = [];
    for (const part of t.parts) {
      let bytes = await this.readPart(part);
      if (t.unpermuteHeads) bytes = unpermuteRows(bytes, part.shape[0]!, t.unpermuteHeads);
      pieces.push(convert(part, bytes, dtype));
    }
    const bytes = new Uint8Array(pieces.reduce((x, p) => x + p.byteLength, 0));
    let at = 0;
    for (const p of pieces) (bytes.set(p, at), (at += p.byteLength));
    if (t.negExpLog || t.minusOne) {
      const values = new Float32Array(bytes.buffer);
      // stored - 1 is exact in f32 for stored >= 0.5 (and below, where the converter's w + 1 was exact), so the
      // model's 1 + w is the stored value again
      for (let i = 0; i < values.length; i++) values[i] = t.negExpLog ? Math.log(-values[i]!) : values[i]! - 1;
    }
    return { dtype, shape: t.shape, bytes: t.rowOrder ? reorderRows(bytes, t.rowOrder) : bytes };
  }

  private async readPart(part: Part): Promise<Uint8Array<ArrayBuffer>> {
    let handle;
    try {
      handle = await openRegularFile(this.file);
    } catch (error) {
      throw new GgufError(`${this.file}: cannot open (${describeReadFailure(error)})`);
    }
    try {
      const bytes = new Uint8Array(part.bytes);
      const { bytesRead } = await handle.read(bytes, 0, part.bytes, part.offset);
      if (bytesRead !== part.bytes) throw new GgufError(`${this.file}: tensor ${part.gguf} is truncated (${bytesRead} of ${part.bytes} bytes)`);
      return bytes;
    } finally {
      await handle.close();
    }
  }

  async close(): Promise<void> {}
}

/** Whole rows (quantized rows are whole blocks) moved so that row i of the result is row order[i] of bytes. */
function reorderRows(bytes: Uint8Array<ArrayBuffer>, order: number[]): Uint8Array<ArrayBuffer> {
  const rowBytes = bytes.byteLength / order.length;
  const out = new Uint8Array(bytes.byteLength);
  order.forEach((from, i) => out.set(bytes.subarray(from * rowBytes, (from + 1) * rowBytes), i * rowBytes));
  return out;
}

/** Undoes LlamaModel.permute: HF rows [h, c, i] (c in 0..1, i < half) were stored at [h, i, c]. Whole rows move. */
function unpermuteRows(bytes: Uint8Array<ArrayBuffer>, rows: number, heads: number): Uint8Array<ArrayBuffer> {
  const rowBytes = bytes.byteLength / rows;
  const half = rows / heads / 2;
  const out = new Uint8Array(bytes.byteLength);
  for (let h = 0; h < heads; h++)
    for (let c = 0; c < 2; c++)
      for (let i = 0; i < half; i++) {
        const src = (h * half * 2 + i * 2 + c) * rowBytes;
        out.set(bytes.subarray(src, src + rowBytes), (h * 2 * half + c * half + i) * rowBytes);
      }
  return out;
}

/** A part's bytes in the served dtype. */
function convert(part: Part, bytes: Uint8Array<ArrayBuffer>, dtype: TensorDtype): Uint8Array<ArrayBuffer> {
  if (part.type === dtype) return bytes;
  const count = part.shape.reduce((x, y) => x * y, 1);
  const values = toValues(part, bytes, count);
  if (dtype === 'F32') return new Uint8Array(values.buffer as ArrayBuffer);
  if (dtype === 'Q8_0' && part.type === 'Q5_0') return q5_0ToQ8_0(bytes, count);
  if (dtype === 'Q8_0') return quantizeGgmlQ8(values);
  throw new GgufError(`tensor ${part.gguf}: cannot serve ${part.type} as ${dtype}`);
}

/** Host values of a part (for types mixed in one HF tensor, or changed by the mapping). */
function toValues(part: Part, bytes: Uint8Array<ArrayBuffer>, count: number): Float32Array {
  if (part.type === 'F32' || part.type === 'F16' || part.type === 'BF16') return Float32Array.from(toFloat32({ dtype: part.type, shape: part.shape, bytes }, part.gguf));
  if (isGgmlBlockDtype(part.type)) return dequantize(repackGgml(part.type, bytes, count), count, GGML_BLOCKS[part.type].storage);
  if (part.type === 'Q5_0') return toValues({ ...part, type: 'Q8_0' }, q5_0ToQ8_0(bytes, count), count);
  if (part.type === 'Q6_K') return dequantQ6K(bytes, count);
  throw new GgufError(`tensor ${part.gguf}: cannot decode ${part.type}`);
}

/** Q5_0 (f16 d, u32 high bits, 16 bytes of low nibbles; x = d * (q - 16)) is exactly Q8_0 with int8 q - 16. */
function q5_0ToQ8_0(bytes: Uint8Array, count: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array((count / 32) * 34);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const q = new Int8Array(out.buffer);
  for (let b = 0; b < count / 32; b++) {
    const at = b * 22;
    out[b * 34] = bytes[at]!;
    out[b * 34 + 1] = bytes[at + 1]!;
    const high = view.getUint32(at + 2, true);
    for (let j = 0; j < 16; j++) {
      const byte = bytes[at + 6 + j]!;
      q[b * 34 + 2 + j] = ((byte & 15) | (((high >>> j) & 1) << 4)) - 16;
      q[b * 34 + 2 + j + 16] = ((byte >> 4) | (((high >>> (j + 16)) & 1) << 4)) - 16;
    }
  }
  return out;
}

/** Q6_K super-block of 256: ql[128], qh[64], int8 scales[16], f16 d; x = d * scale * (q - 32) (dequantize_row_q6_K). */
function dequantQ6K(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let sb = 0; sb < count / 256; sb++) {
    const at = sb * 210;
    const d = f16BitsToF32(view.getUint16(at + 208, true));
    for (let n = 0; n < 2; n++) {
      const ql = at + n * 64;
      const qh = at + 128 + n * 32;
      const sc = at + 192 + n * 8;
      const y = sb * 256 + n * 128;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const q1 = ((bytes[ql + l]! & 15) | (((bytes[qh + l]! >> 0) & 3) << 4)) - 32;
        const q2 = ((bytes[ql + l + 32]! & 15) | (((bytes[qh + l]! >> 2) & 3) << 4)) - 32;
        const q3 = ((bytes[ql + l]! >> 4) | (((bytes[qh + l]! >> 4) & 3) << 4)) - 32;
        const q4 = ((bytes[ql + l + 32]! >> 4) | (((bytes[qh + l]! >> 6) & 3) << 4)) - 32;
        out[y + l] = d * view.getInt8(sc + is) * q1;
        out[y + l + 32] = d * view.getInt8(sc + is + 2) * q2;
        out[y + l + 64] = d * view.getInt8(sc + is + 4) * q3;
        out[y + l + 96] = d * view.getInt8(sc + is + 6) * q4;
      }
    }
  }
  return out;
}

/**
 * tokenizer.json / tokenizer_config.json equivalents of the metadata's tokenizer: byte-level BPE ("gpt2") with the
 * GPT-2 pre-tokenizer; other tokenizer models or pre-tokenizer regexes are refused by name.
 */
function tokenizerFiles(meta: Meta, file: string): GgufModel['tokenizer'] {
  const model = meta['tokenizer.ggml.model'];
  if (model === undefined) return undefined;
  const pre = meta['tokenizer.ggml.pre'] ?? 'default';
  if (model !== 'gpt2' || (pre !== 'gpt-2' && pre !== 'default'))
    throw new GgufError(`${file}: tokenizer.ggml.model "${elide(String(model), 40)}" with pre-tokenizer "${elide(String(pre), 40)}" is not supported (supported: gpt2 with gpt-2)`);
  const tokens = meta['tokenizer.ggml.tokens'] as string[];
  const types = (meta['tokenizer.ggml.token_type'] as number[] | undefined) ?? [];
  const merges = ((meta['tokenizer.ggml.merges'] as string[] | undefined) ?? []).map((m) => m.split(' '));
  const vocab = Object.fromEntries(tokens.map((t, i) => [t, i]));
  // llama.cpp token types: 3 control, 4 user-defined: HF's added tokens
  const added = tokens.flatMap((content, id) => (types[id] === 3 || types[id] === 4 ? [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[id] === 3 }] : []));
  const idText = (key: string) => (meta[key] === undefined ? undefined : tokens[num(meta, key)]);
  const bos = idText('tokenizer.ggml.bos_token_id');
  const addBos = meta['tokenizer.ggml.add_bos_token'] === true && bos !== undefined;
  const json = {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: addBos
      ? { type: 'TemplateProcessing', single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { [bos]: { id: bos, ids: [num(meta, 'tokenizer.ggml.bos_token_id')], tokens: [bos] } } }
      : null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
  const config: Record<string, unknown> = {};
  if (bos !== undefined) config.bos_token = bos;
  const eos = idText('tokenizer.ggml.eos_token_id');
  if (eos !== undefined) config.eos_token = eos;
  const pad = idText('tokenizer.ggml.padding_token_id');
  if (pad !== undefined) config.pad_token = pad;
  if (typeof meta['tokenizer.chat_template'] === 'string') config.chat_template = meta['tokenizer.chat_template'];
  return { json, config };
}
