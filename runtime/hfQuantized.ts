// Hugging Face's own 4-bit checkpoints (config.json `quantization_config`): GPTQ (AutoGPTQ / GPTQModel, the
// `gptq` and `gptq_v2` checkpoint formats) and AWQ (AutoAWQ's GEMM layout), read into Strata's q4 storage. A
// layer `X` stored as X.qweight / X.qzeros / X.scales (/ X.g_idx) is served as X.weight [out, in] in GGML Q4_1
// blocks (f16 d, f16 m, 16 bytes of nibbles), which runtime/quantize.ts repacks bit for bit into q4 (value =
// scale * q + min): d is the group's scale as stored and m = f16(-scale * zero), rounded to f16 (exact when the
// zero is a power of two, as symmetric GPTQ's 8 is). The group must hold whole 32-element blocks of a row.
// What does not map is refused by name: other bit widths, act-order (desc_act, or a g_idx that is not
// i / group_size), AWQ's GEMV layout or zero_point false, and other quant methods (bitsandbytes, ...).
import { StrataUserError, describeJson, elide } from '../base/errors.ts';
import { type TensorData, type TensorInfo, type TensorSource } from '../base/safetensors.ts';
import { f32ToF16Bits, f16BitsToF32, toFloat32, toInt32 } from '../base/tensorValues.ts';
import { QUANT_BLOCK } from '../compiler/quantized.ts';

export class QuantizedCheckpointError extends StrataUserError {
  override name = 'QuantizedCheckpointError';
}

/** How a checkpoint's packed 4-bit layers are laid out. */
export interface HfQuantization {
  method: 'gptq' | 'awq';
  /** Input elements sharing one scale and zero; -1 in the config (one group per row) is resolved per tensor. */
  groupSize: number;
  /** Added to a stored zero: 1 in the `gptq` (v1) checkpoint format, which stores zero - 1. */
  zeroOffset: number;
}

const Q4_1_BYTES = 20;
/** AutoAWQ packs output columns 8 to a word in the order [0, 2, 4, 6, 1, 3, 5, 7]: column k of a word is nibble AWQ_NIBBLE[k]. */
const AWQ_NIBBLE = [0, 4, 1, 5, 2, 6, 3, 7];

/** The checkpoint's quantization from its raw config.json, undefined for a 16/32-bit one; refused where it does not map. */
export function hfQuantization(raw: Readonly<Record<string, unknown>>, where: string): HfQuantization | undefined {
  const q = raw.quantization_config;
  if (q === undefined || q === null) return undefined;
  const refuse = (field: string, why: string) => new QuantizedCheckpointError(`${where}: quantization_config.${field} ${why}`);
  if (typeof q !== 'object' || Array.isArray(q)) throw new QuantizedCheckpointError(`${where}: quantization_config must be an object, got ${describeJson(q)}`);
  const c = q as Record<string, unknown>;
  const method = c.quant_method;
  if (method !== 'gptq' && method !== 'awq') throw refuse('quant_method', `= ${elide(JSON.stringify(method) ?? 'undefined', 40)} is not read (read: "gptq", "awq" at 4 bits)`);
  const bits = c.bits ?? c.w_bit;
  if (bits !== 4) throw refuse(c.bits === undefined ? 'w_bit' : 'bits', `= ${describeJson(bits)}: ${method} is read at 4 bits only (Strata's q4 storage)`);
  const group = c.group_size ?? c.q_group_size;
  if (!Number.isInteger(group) || (group !== -1 && ((group as number) <= 0 || (group as number) % QUANT_BLOCK !== 0)))
    throw refuse(c.group_size === undefined ? 'q_group_size' : 'group_size', `= ${describeJson(group)}: must be -1 or a positive multiple of ${QUANT_BLOCK} (a group holds whole q4 blocks)`);
  if (method === 'gptq') {
    if (c.desc_act === true) throw refuse('desc_act', '= true (act-order: groups follow a permutation of the inputs) is not supported');
    const format = c.checkpoint_format ?? 'gptq';
    if (format !== 'gptq' && format !== 'gptq_v2') throw refuse('checkpoint_format', `= ${describeJson(format)} is not read (read: "gptq", "gptq_v2")`);
    return { method, groupSize: group as number, zeroOffset: format === 'gptq' ? 1 : 0 };
  }
  const version = String(c.version ?? 'gemm').toLowerCase();
  if (version !== 'gemm') throw refuse('version', `= ${describeJson(c.version)}: only AutoAWQ's GEMM packing is read`);
  if ((c.zero_point ?? true) !== true) throw refuse('zero_point', `= ${describeJson(c.zero_point)}: only zero-point AWQ is read`);
  return { method, groupSize: group as number, zeroOffset: 0 };
}

/** `source` with its packed layers served as `<layer>.weight` in Q4_1 blocks, every other tensor as it is (`source` itself without a scheme). */
export function hfQuantizedSource(source: TensorSource, scheme: HfQuantization | undefined): TensorSource {
  return scheme ? new HfQuantizedSource(source, scheme) : source;
}

const PACKED = ['.qweight', '.qzeros', '.scales', '.g_idx'];

class HfQuantizedSource implements TensorSource {
  /** `<layer>.weight` -> `<layer>` for every packed layer. */
  private readonly layers = new Map<string, string>();
  constructor(
    private readonly source: TensorSource,
    private readonly scheme: HfQuantization,
  ) {
    for (const name of source.tensorNames()) if (name.endsWith('.qweight')) this.layers.set(`${name.slice(0, -'.qweight'.length)}.weight`, name.slice(0, -'.qweight'.length));
  }
  get metadata() {
    return this.source.metadata;
  }

  tensorNames(): string[] {
    const packed = (name: string) => PACKED.some((s) => name.endsWith(s) && this.layers.has(`${name.slice(0, -s.length)}.weight`));
    return [...this.source.tensorNames().filter((n) => !packed(n)), ...this.layers.keys()];
  }
  has(name: string): boolean {
    return this.layers.has(name) || this.source.has(name);
  }

  /** [out, in] of a packed layer, from its qweight: GPTQ packs 8 inputs a word ([in/8, out]), AWQ 8 outputs ([in, out/8]). */
  private dims(layer: string): { out: number; inputs: number; group: number } {
    const q = this.source.info(`${layer}.qweight`);
    if (q.dtype !== 'I32' || q.shape.length !== 2) throw new QuantizedCheckpointError(`${layer}.qweight: expected a 2-D I32 tensor, got ${q.dtype} (${q.shape.join(',')})`);
    const [out, inputs] = this.scheme.method === 'gptq' ? [q.shape[1]!, q.shape[0]! * 8] : [q.shape[1]! * 8, q.shape[0]!];
    const group = this.scheme.groupSize === -1 ? inputs : this.scheme.groupSize;
    if (inputs % group !== 0 || inputs % QUANT_BLOCK !== 0) throw new QuantizedCheckpointError(`${layer}: ${inputs} inputs are no whole groups of ${group} (quantization_config.group_size)`);
    return { out, inputs, group };
  }

  info(name: string): TensorInfo {
    const layer = this.layers.get(name);
    if (!layer) return this.source.info(name);
    const { out, inputs } = this.dims(layer);
    const q = this.source.info(`${layer}.qweight`);
    return { name, dtype: 'Q4_1', shape: [out, inputs], byteOffset: q.byteOffset, byteLength: ((out * inputs) / QUANT_BLOCK) * Q4_1_BYTES, file: q.file };
  }

  async readTensor(name: string): Promise<TensorData> {
    const layer = this.layers.get(name);
    if (!layer) return this.source.readTensor(name);
    const { out, inputs, group } = this.dims(layer);
    const groups = inputs / group;
    const read = async (suffix: string) => this.source.readTensor(layer + suffix);
    const expectShape = (t: TensorData, suffix: string, shape: number[]) => {
      if (t.shape.join(',') !== shape.join(',')) throw new QuantizedCheckpointError(`${layer}${suffix}: shape (${t.shape.join(',')}), expected (${shape.join(',')}) for ${out} outputs, ${inputs} inputs, groups of ${group}`);
    };
    const qweight = toInt32(await read('.qweight'));
    const zerosT = await read('.qzeros');
    expectShape(zerosT, '.qzeros', [groups, out / 8]);
    const qzeros = toInt32(zerosT);
    const scalesT = await read('.scales');
    expectShape(scalesT, '.scales', [groups, out]);
    // f16 as stored (a wider dtype is rounded: the q4 block constants are f16)
    const scales = scalesT.dtype === 'F16' ? new Uint16Array(scalesT.bytes.buffer) : Uint16Array.from(toFloat32(scalesT), f32ToF16Bits);
    if (this.scheme.method === 'gptq' && this.source.has(`${layer}.g_idx`)) {
      const gIdx = toInt32(await read('.g_idx'));
      const at = gIdx.findIndex((g, i) => g !== Math.floor(i / group));
      if (gIdx.length !== inputs || at >= 0)
        throw new QuantizedCheckpointError(`${layer}.g_idx: input ${at} is in group ${gIdx[at]}, not ${Math.floor(at / group)} = input / group_size (act-order): not supported`);
    }
    const gptq = this.scheme.method === 'gptq';
    // code of input i, output j; zero of group g, output j (both GPTQ and AWQ pack zeros 8 outputs a word)
    const code = gptq ? (i: number, j: number) => (qweight[(i >> 3) * out + j]! >>> ((i & 7) * 4)) & 15 : (i: number, j: number) => (qweight[i * (out / 8) + (j >> 3)]! >>> (AWQ_NIBBLE[j & 7]! * 4)) & 15;
    const zero = (g: number, j: number) => ((qzeros[g * (out / 8) + (j >> 3)]! >>> ((gptq ? j & 7 : AWQ_NIBBLE[j & 7]!) * 4)) & 15) + this.scheme.zeroOffset;
    const blocks = inputs / QUANT_BLOCK;
    const bytes = new Uint8Array(out * blocks * Q4_1_BYTES);
    const view = new DataView(bytes.buffer);
    for (let j = 0; j < out; j++)
      for (let b = 0; b < blocks; b++) {
        const at = (j * blocks + b) * Q4_1_BYTES;
        const g = Math.floor((b * QUANT_BLOCK) / group);
        const d = scales[g * out + j]!;
        view.setUint16(at, d, true);
        view.setUint16(at + 2, f32ToF16Bits(-f16BitsToF32(d) * zero(g, j)), true);
        for (let t = 0; t < 16; t++) bytes[at + 4 + t] = code(b * QUANT_BLOCK + t, j) | (code(b * QUANT_BLOCK + t + 16, j) << 4);
      }
    return { dtype: 'Q4_1', shape: [out, inputs], bytes };
  }

  close(): Promise<void> {
    return this.source.close();
  }
}
