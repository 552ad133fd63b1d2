// The decode attention kernel's variants (compiler/lower/attentionDecode.ts): named presets of its constants, and
// the parser of STRATA_ATTN_DECODE (`name` or `name:key=value,...`) so that a GPU sweep needs no code change.
import { StrataUserError } from '../../base/errors.ts';

/** How a decode attention workgroup lays its threads over keys and head elements. */
export interface AttentionDecodeVariant {
  /** Threads that share one key (a power of two, 1 to 32); each holds D / lanes of its query, key and value rows. */
  lanes: number;
  /** Loads a thread issues together per trip (key and value elements of its keys), before unrolling is cut. */
  loads: number;
  /** Threads of a workgroup. */
  wg: number;
  /**
   * Which elements a lane holds: `strided` (lane + j * lanes: a group's lanes read adjacent words at once) or
   * `blocked` (lane * J + j: each lane a contiguous run of its row, which a GPU compiler may merge into wide loads).
   */
  order: 'strided' | 'blocked';
  /**
   * Where a trip's keys past the row's limit read: `capacity` (the cache's last row, a row of their own) or `limit`
   * (the last attended key's row, already being read: no memory traffic for the trip's unused keys).
   */
  clamp: 'capacity' | 'limit';
}

/**
 * The KV caches are f32 rows of a head's elements (a key's D elements adjacent, keys a row apart), read as scalars.
 * 'lanes': 4 lanes a key, so a warp's load touches 8 keys' 16-byte runs, half of each 32-byte
 * sector (the other half by the next load). 'sector': 8 lanes a key, strided: a load reads whole sectors of 4 keys,
 * 16 loads a thread per key pair instead of 32. 'vec': 8 lanes a key, each holding a contiguous run of 8 elements
 * (two aligned 16-byte runs of its key and of its value row), loads a GPU compiler may merge into wide ones.
 * Both read the last attended key where a trip runs past the limit (192 positions fill 3/4 of a 256-key trip).
 */
export const ATTENTION_DECODE_VARIANTS = {
  lanes: { lanes: 4, loads: 128, wg: 256, order: 'strided', clamp: 'capacity' },
  sector: { lanes: 8, loads: 128, wg: 256, order: 'strided', clamp: 'limit' },
  vec: { lanes: 8, loads: 128, wg: 256, order: 'blocked', clamp: 'limit' },
} as const satisfies Record<string, AttentionDecodeVariant>;

export type AttentionDecodeName = keyof typeof ATTENTION_DECODE_VARIANTS;
/**
 * The default: 'sector' on GPUs (H200, llama-400m shapes, `bench attn` at 2de062a: 6.8 us against lanes' 9.7 at 192
 * positions, 14.2 against 22.2 at 1,000; a decode step 1.08 -> 0.94 ms), 'lanes' on a software adapter, where a
 * group of 8 without subgroups reduces through workgroup memory and nothing was measured to pay for it.
 */
export const defaultAttentionDecode = (software: boolean): AttentionDecodeVariant => (software ? ATTENTION_DECODE_VARIANTS.lanes : ATTENTION_DECODE_VARIANTS.sector);

const POW2 = (lo: number, hi: number) => (x: number) => Number.isInteger(x) && x >= lo && x <= hi && (x & (x - 1)) === 0;
const NUMERIC: Record<'lanes' | 'loads' | 'wg', (x: number) => boolean> = { lanes: POW2(1, 32), loads: POW2(8, 256), wg: POW2(64, 512) };

/** `name` or `name:key=value,...` (keys lanes, loads, wg, order, clamp) -> the variant; a StrataUserError of one line otherwise. */
export function parseAttentionDecode(spec: string, source = 'STRATA_ATTN_DECODE'): AttentionDecodeVariant {
  const [name = '', rest] = spec.split(':', 2);
  const fail = (why: string) => new StrataUserError(`${source} must be one of ${Object.keys(ATTENTION_DECODE_VARIANTS).join(', ')}, optionally with :lanes=1..32,loads=8..256,wg=64..512 (powers of two),order=strided|blocked,clamp=capacity|limit; ${why} in '${spec}'`);
  if (!(name in ATTENTION_DECODE_VARIANTS)) throw fail(`unknown variant '${name}'`);
  const variant: AttentionDecodeVariant = { ...ATTENTION_DECODE_VARIANTS[name as AttentionDecodeName] };
  for (const part of rest ? rest.split(',') : []) {
    const [key = '', value = ''] = part.split('=', 2);
    if (key === 'order') {
      if (value !== 'strided' && value !== 'blocked') throw fail(`order '${value}'`);
      variant.order = value;
    } else if (key === 'clamp') {
      if (value !== 'capacity' && value !== 'limit') throw fail(`clamp '${value}'`);
      variant.clamp = value;
    } else if (key === 'lanes' || key === 'loads' || key === 'wg') {
      const n = Number(value);
      if (!NUMERIC[key](n)) throw fail(`${key} '${value}'`);
      variant[key] = n;
    } else throw fail(`unknown key '${key}'`);
  }
  if (variant.lanes > variant.wg) throw fail(`lanes above wg`);
  return variant;
}

/** `lanes=8,loads=128,wg=256,order=blocked,clamp=limit`: a variant in STRATA_ATTN_DECODE's key=value syntax, for reports. */
export const formatAttentionDecode = (v: AttentionDecodeVariant): string => `lanes=${v.lanes},loads=${v.loads},wg=${v.wg},order=${v.order},clamp=${v.clamp}`;
