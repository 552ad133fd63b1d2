// Rows of a matmul computed inside another kernel's workgroup (a projection prologue: lower/attentionProjection.ts,
// lower/ssdStepKernel.ts): the left operand's row staged in workgroup memory, then chosen weight rows dotted with it.
import { type Node, numel } from '../ir.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { halfPair, halfWord } from '../halfStorage.ts';
import { QUANT_FORMATS, type QuantFormat, isQuantized } from '../quantized.ts';
import type { Emitter } from './emitter.ts';

/** Lanes that share one projected row's K loop (a warp reads 4 rows' 32-byte runs of 16-bit weights at once). */
export const LANES = 8;

/**
 * Stages `left` at `lead` (its leading indices) in `proj_x` (Kd floats, declared by the caller): its reductions
 * (the norm's mean) become the emitter's phases, placed before the staging loop; a barrier follows.
 */
export function stageRow(e: Emitter, left: Node, lead: KExpr[], Kd: number): void {
  e.cooperative = true;
  const kx = e.bound('pk', Kd - 1);
  const staging = e.nested(() => e.line(`proj_x[pk] = ${e.value(left, [...lead, kx])};`));
  e.cooperative = false;
  e.phases.forEach((l) => e.line(l));
  e.line(`for (var pk: u32 = lid; pk < ${Kd}u; pk += WG) {`);
  staging.forEach((l) => e.line('  ' + l));
  e.line(`}`);
  e.line(`workgroupBarrier();`);
}

/** `width` rows of one [N, Kd] weight: `row(r)` is local row r's weight row, `store(r, v)` a statement keeping its dot. */
export interface RowSet {
  weight: Node;
  width: number;
  row: (r: KExpr) => KExpr;
  store: (r: KExpr, v: string) => string;
}

/** One set of `a`'s rows then `b`'s (of the same weight): where their widths add up to fewer accumulators a thread. */
export function concatRows(a: RowSet, b: RowSet): RowSet {
  const inB = (r: KExpr) => V.arith('-', r, K.u32(a.width));
  const inA = (r: KExpr) => V.compare('<', r, K.u32(a.width));
  return {
    weight: a.weight,
    width: a.width + b.width,
    row: (r) => V.select(b.row(inB(r)), a.row(r), inA(r)),
    store: (r, v) => `if (${inA(r)}) { ${a.store(r, v)} } else { ${b.store(inB(r), v)} }`,
  };
}

/**
 * The dots of every set's rows with proj_x. Thread (row, lane) takes rows row, row + WG / LANES, ... of every set at
 * once: all its accumulators' weight loads of a K step are in flight together, and one reduction round serves them
 * all. The K loop takes the widest read the weights allow: u32x4s of 16-bit pairs (vectorSteps), a quantized word
 * (runSteps), else a pair of elements (pairSteps). Lane 0 of a row stores its dot; no barrier follows.
 */
export function emitRowDots(e: Emitter, Kd: number, sets: RowSet[], wg: number, subgroups: boolean, unroll: boolean, rotate?: string): void {
  const rowsAtOnce = wg / LANES;
  e.redTypes.add('f32'); // red_f32 (WG floats) carries the lanes' sums without subgroups; the phases are done with it
  e.line(`let pj_lane = ${V.arith('%', K.v('lid'), K.u32(LANES))};`);
  e.line(`let pj_row = ${V.arith('/', K.v('lid'), K.u32(LANES))};`);
  /** The thread's local row of its accumulator i of a set. */
  const localRow = (i: number) => V.arith('+', K.v('pj_row'), K.u32(i * rowsAtOnce));
  const accs = sets.flatMap((m, j) => Array.from({ length: Math.ceil(m.width / rowsAtOnce) }, (_, i) => ({ m, i, acc: `pa${j}_${i}`, row: `pn${j}_${i}` })));
  for (const a of accs) {
    e.line(`let ${a.row} = ${a.m.row(V.fn('min', [localRow(a.i), K.u32(a.m.width - 1)]))};`);
    e.line(`var ${a.acc}: f32 = 0.0;`);
  }
  const storages = new Set(accs.map((a) => storageOf(a.m.weight)));
  const [only] = storages.size === 1 ? [...storages] : [undefined];
  const body =
    (only === 'f16' || only === 'bf16') && Kd % (8 * LANES) === 0
      ? vectorSteps(e, Kd, accs, unroll)
      : only !== undefined && isQuantized(only) && Kd % (QUANT_FORMATS[only].perWord * LANES) === 0
        ? runSteps(e, Kd, accs, unroll, QUANT_FORMATS[only])
        : pairSteps(e, Kd, accs, unroll);
  const stride = body.perLane * LANES * body.trip;
  const trips = Math.ceil(Kd / stride);
  const laneFirst = V.arith('*', K.v('pj_lane'), K.u32(body.perLane)); // the lane's first K element of a trip
  if (rotate === undefined || trips < 2 || Kd % stride !== 0) {
    e.line(`for (var pq: u32 = ${laneFirst}; pq < ${Kd}u; pq += ${stride}u) {`);
    body.lines.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  } else {
    // workgroups that read the same rows start their K loops at different trips (`rotate`), so that they do not
    // all ask the same cache lines at once
    e.line(`for (var pt: u32 = 0u; pt < ${trips}u; pt++) {`);
    e.line(`  let pq = ${V.arith('+', laneFirst, V.arith('*', V.arith('%', V.arith('+', K.v('pt'), K.v(rotate)), K.u32(trips)), K.u32(stride)))};`);
    body.lines.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  }
  const accOf = (a: (typeof accs)[number]) => K.v(a.acc, 'f32');
  const shuffles = accs.flatMap((a) => [1, 2, 4].map((x) => `${a.acc} = ${V.arith('+', accOf(a), V.shuffleXor(accOf(a), K.u32(x)))};`));
  const lane = (l: number) => K.load('red_f32', V.arith('+', V.arith('*', K.v('pj_row'), K.u32(LANES)), K.u32(l)), wg, 'f32');
  const sum = () => [...Array(LANES).keys()].map(lane).reduce((s, x) => V.arith('+', s, x));
  const shared = accs.flatMap((a) => [`red_f32[lid] = ${a.acc};`, `workgroupBarrier();`, `${a.acc} = ${sum()};`, `workgroupBarrier();`]);
  if (!subgroups) shared.forEach((l) => e.line(l));
  else e.groupSum(LANES, shuffles, shared);
  e.line(`if (pj_lane == 0u) {`);
  for (const a of accs) {
    const r = localRow(a.i);
    e.line(`  if (${V.compare('<', r, K.u32(a.m.width))}) { ${a.m.store(r, a.acc)} }`);
  }
  e.line(`}`);
}

interface Acc {
  m: RowSet;
  acc: string;
  row: string;
}

/** A K loop's body: its lines, the elements a lane takes a step, and the steps a trip. */
interface StepLoop {
  lines: string[];
  perLane: number;
  trip: number;
}

const storageOf = (w: Node): string => (w.op === 'weight' ? (w as Node<'weight'>).attrs.storage : 'f32');

/** Steps a trip of a wide K loop where loops are written out: at most ~24 wide loads in flight a thread. */
const wideTrip = (steps: number, accs: Acc[], unroll: boolean): number => (unroll ? ([4, 2].find((t) => steps % t === 0 && accs.length * t <= 24) ?? 1) : 1);

/** Step u of a trip: its K offset `pq<u>` and the `per` staged x values a lane takes there. */
function stepX(e: Emitter, u: number, per: number, Kd: number): KExpr[] {
  e.bound(`pq${u}`, Kd - per);
  e.line(`let pq${u} = ${V.arith('+', K.v('pq'), K.u32(u * per * LANES))};`);
  return [...Array(per).keys()].map((i) => {
    e.line(`let px${u}_${i} = ${K.load('proj_x', i ? V.arith('+', K.v(`pq${u}`), K.u32(i)) : K.v(`pq${u}`), Kd, 'f32')};`);
    return K.v(`px${u}_${i}`, 'f32');
  });
}

/**
 * 16-bit weights, K a multiple of 8 LANES: a lane reads one u32x4 (8 elements) of every row at a step, so the LANES
 * lanes of a row read 128 contiguous bytes, and a thread keeps every accumulator's loads of `trip` steps in flight
 * (one workgroup computes all its rows alone: its bytes in flight bound its speed, not the GPU's bandwidth).
 */
function vectorSteps(e: Emitter, Kd: number, accs: Acc[], unroll: boolean): StepLoop {
  const trip = wideTrip(Kd / (8 * LANES), accs, unroll);
  for (const a of accs) {
    e.buffer(a.m.weight);
    e.vectorIds.add(a.m.weight.id);
  }
  const lines = e.nested(() => {
    for (let u = 0; u < trip; u++) {
      const xs = stepX(e, u, 8, Kd);
      // every accumulator's load first, then the multiply-adds
      const words = accs.map((a) => {
        const w = a.m.weight;
        e.bound(a.row, w.shape[0]! - 1);
        const v = e.fresh('pw');
        const at = V.arith('+', V.arith('*', K.v(a.row), K.u32(Kd / 8)), V.shift('>>', K.v(`pq${u}`), K.u32(3)));
        e.line(`let ${v} = ${K.load(`@V${w.id}@`, at, numel(w.shape) / 8, 'vec4<u32>')};`);
        return K.v(v, 'vec4<u32>');
      });
      accs.forEach((a, j) => {
        const storage = (a.m.weight as Node<'weight'>).attrs.storage as 'f16' | 'bf16';
        let sum: KExpr = K.v(a.acc, 'f32');
        (['x', 'y', 'z', 'w'] as const).forEach((c, i) => {
          const half = halfPair(storage, V.field(words[j]!, c), () => e.fresh('pw'));
          half.lines.forEach((l) => e.line(l));
          sum = V.arith('+', V.arith('+', sum, V.arith('*', xs[2 * i]!, half.values[0]!)), V.arith('*', xs[2 * i + 1]!, half.values[1]!));
        });
        e.line(`${a.acc} = ${sum};`);
      });
    }
  });
  return { lines, perLane: 8, trip };
}

/** Block-quantized weights, K a multiple of LANES runs: a lane decodes one packed word of every row at a step (4 q8 or 8 q4 elements, the word and its block's constants: QuantFormat.run). */
function runSteps(e: Emitter, Kd: number, accs: Acc[], unroll: boolean, format: QuantFormat): StepLoop {
  const per = format.perWord;
  const trip = wideTrip(Kd / (per * LANES), accs, unroll);
  const lines = e.nested(() => {
    for (let u = 0; u < trip; u++) {
      const xs = stepX(e, u, per, Kd);
      for (const a of accs) {
        const w = a.m.weight;
        e.bound(a.row, w.shape[0]! - 1);
        const run = format.run(e.buffer(w), V.arith('+', V.arith('*', K.v(a.row), K.u32(Kd)), K.v(`pq${u}`)), numel(w.shape), (p) => e.fresh(p));
        run.lines.forEach((l) => e.line(l));
        const sum = run.values.reduce<KExpr>((acc, v, i) => V.arith('+', acc, V.arith('*', xs[i]!, v)), K.v(a.acc, 'f32'));
        e.line(`${a.acc} = ${sum};`);
      }
    }
  });
  return { lines, perLane: per, trip };
}

/** f32 weights, mixed storages, or K not whole wide steps: a lane reads one packed 16-bit word (or two elements) of every row at a step. */
function pairSteps(e: Emitter, Kd: number, accs: Acc[], unroll: boolean): StepLoop {
  // K steps of 2 LANES elements; several steps a trip where loops are written out
  const steps = Kd / (2 * LANES);
  const trip = unroll && Number.isInteger(steps) && steps % 4 === 0 ? 4 : 1;
  const lines = e.nested(() => {
    for (let u = 0; u < trip; u++) {
      const pq = e.bound(`pq${u}`, Kd - 2);
      e.line(`let pq${u} = ${V.arith('+', K.v('pq'), K.u32(u * 2 * LANES))};`);
      e.line(`let px${u} = ${K.load('proj_x', K.v(`pq${u}`), Kd, 'f32')};`);
      e.line(`let py${u} = ${K.load('proj_x', V.arith('+', K.v(`pq${u}`), K.u32(1)), Kd, 'f32')};`);
      const [px, py] = [K.v(`px${u}`, 'f32'), K.v(`py${u}`, 'f32')];
      for (const a of accs) {
        const w = a.m.weight;
        const storage = w.op === 'weight' ? (w as Node<'weight'>).attrs.storage : 'f32';
        const n = e.bound(a.row, w.shape[0]! - 1);
        let pair: KExpr[];
        if (storage === 'f16') {
          // one unpacking of the word holding both elements (pq is even)
          const word = halfWord(e.buffer(w), V.arith('+', V.arith('*', K.v(a.row), K.u32(Kd)), K.v(`pq${u}`)), numel(w.shape));
          const half = halfPair('f16', word, () => e.fresh('pw'));
          half.lines.forEach((l) => e.line(l));
          pair = half.values;
        } else pair = [e.load(w, [n, pq]), e.load(w, [n, e.ix.add(pq, e.ix.lit(1))])];
        const acc = K.v(a.acc, 'f32');
        e.line(`${acc} = ${V.arith('+', V.arith('+', acc, V.arith('*', px, pair[0]!)), V.arith('*', py, pair[1]!))};`);
      }
    }
  });
  return { lines, perLane: 2, trip };
}
