// The thread layout the Mamba-1 step and scan kernels share: one workgroup per (sequence, CW channels), L =
// nextPow2(N) lanes per channel, lane n owning state element n (clamped, with ok flags for the lanes and channels
// past the ends).
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { type Emitter, nextPow2 } from './emitter.ts';

/** Threads a workgroup. */
export const CHANNEL_LANES_WG = 128;

export interface ChannelLanes {
  /** Lanes a channel, channels a workgroup, workgroups in all. */
  L: number;
  CW: number;
  groups: number;
  /** The workgroup's sequence, its first channel, this thread's channel and state element (clamped). */
  seq: KExpr;
  first: KExpr;
  d: KExpr;
  n: KExpr;
}

/**
 * Emits the layout's lines (`lane`, `ch`, `sn`, `ok_ch`, `ok_n`; threads of workgroups past the end return). `lanes`
 * where given fixes the lanes a channel (the large-state scan's lanes own several elements each).
 */
export function channelLanes(e: Emitter, sequences: number, D: number, N: number, lanes?: number): ChannelLanes {
  const L = lanes ?? Math.min(CHANNEL_LANES_WG, nextPow2(N));
  const CW = CHANNEL_LANES_WG / L;
  const perSeq = Math.ceil(D / CW);
  const groups = sequences * perSeq;
  e.workgroupSize = CHANNEL_LANES_WG;
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const seq = e.declareTop('o0', e.ix.div(gi, perSeq));
  const first = e.declareTop('o1', e.ix.mul(e.ix.mod(gi, perSeq), CW));
  // written as they stand, not simplified: lid is below the workgroup size
  const [lid, lane, u] = [K.v('lid'), K.v('lane'), K.u32];
  const channel = V.arith('+', first, V.arith('/', lid, u(L)));
  e.line(`let lane = ${V.arith('%', lid, u(L))};`);
  e.line(`let ok_ch = ${V.compare('<', channel, u(D))};`);
  const d = e.bound('ch', D - 1);
  e.line(`let ch = ${V.fn('min', [channel, u(D - 1)])};`);
  const n = e.bound('sn', N - 1);
  e.line(`let sn = ${V.fn('min', [lane, u(N - 1)])};`);
  e.line(`let ok_n = ${V.compare('<', lane, u(N))};`);
  return { L, CW, groups, seq, first, d, n };
}
