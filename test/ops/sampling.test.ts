// Sampling on the device (dsl/nn/sampling.ts) on both backends: greedy argmax, the PCG stream, and the sampled
// path checked through its inverse CDF. Rows share one logits vector and take stratified uniforms (i + 0.5) / S,
// so the count of each token is S times its probability under HF's processors, to within one.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../../dsl/tensor.ts';
import { input } from '../../dsl/trace.ts';
import { GREEDY, PARAM_STRIDE, type SamplingParams, argmax, packSamplingParams, pcgNext, sampleTokens, seedState } from '../../dsl/nn/sampling.ts';
import { rng, runBoth, uniform } from '../helpers/gpu.ts';

/** HF's processors in float64: repetition penalty, temperature, top-k, top-p, min-p; probabilities over V. */
function expectedProbs(logits: number[], p: SamplingParams, seen: number[] = []): number[] {
  const seenSet = new Set(seen);
  const z = logits.map((l, i) => (seenSet.has(i) ? (l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty) : l) / p.temperature);
  const order = z.map((_, i) => i).sort((a, b) => z[b]! - z[a]!);
  const keep = new Set(order);
  if (p.topK > 0) for (const i of order.slice(p.topK)) keep.delete(i);
  const softmaxOver = (ids: Iterable<number>) => {
    const list = [...ids];
    const m = Math.max(...list.map((i) => z[i]!));
    const e = new Map(list.map((i) => [i, Math.exp(z[i]! - m)]));
    const total = [...e.values()].reduce((a, b) => a + b, 0);
    return new Map([...e].map(([i, v]) => [i, v / total]));
  };
  if (p.topP < 1) {
    const probs = softmaxOver(keep);
    let mass = 0;
    for (const i of order) {
      if (!keep.has(i)) continue;
      if (mass >= p.topP) keep.delete(i);
      else mass += probs.get(i)!;
    }
  }
  if (p.minP > 0) {
    const probs = softmaxOver(keep);
    const top = Math.max(...probs.values());
    for (const [i, q] of probs) if (q < p.minP * top) keep.delete(i);
  }
  const probs = softmaxOver(keep);
  return logits.map((_, i) => probs.get(i) ?? 0);
}

function histogram(tokens: ArrayLike<number>, V: number): number[] {
  const h = new Array<number>(V).fill(0);
  for (let i = 0; i < tokens.length; i++) h[tokens[i]!]!++;
  return h;
}

/** Runs sampleTokens on S rows that share one logits row, with stratified uniforms; both backends. */
async function sampleRows(logits: number[], params: SamplingParams, S: number, seen: number[] = []) {
  const V = logits.length;
  const seenRow = new Array<number>(V).fill(0);
  for (const t of seen) seenRow[t] = 1;
  const res = await runBoth(
    () => {
      const l = input('logits', [1, V]).broadcastTo([S, V]);
      const p = input('params', [1, PARAM_STRIDE]).broadcastTo([S, PARAM_STRIDE]);
      const s = input('seen', [1, V]).broadcastTo([S, V]);
      return { tokens: sampleTokens({ logits: l, params: p, uniform: input('u', [S]), seen: s }, 'sample') };
    },
    {},
    { inputs: { logits, params: packSamplingParams(params), seen: seenRow, u: Array.from({ length: S }, (_, i) => (i + 0.5) / S) } },
  );
  return { cpu: res.cpu.outputs.tokens!.data, gpu: res.gpu.outputs.tokens!.data };
}

const S = 64;
const base = (over: Partial<SamplingParams>): SamplingParams => ({ ...GREEDY, temperature: 1, ...over });

describe('sampled path matches HF processors (counts within 1 of S * p)', () => {
  const cases: [string, Partial<SamplingParams>, number][] = [
    ['temperature 1', {}, 37],
    ['temperature 0.7, top-k 5', { temperature: 0.7, topK: 5 }, 97],
    ['top-p 0.8', { topP: 0.8 }, 97],
    ['top-k 20 then top-p 0.9', { topK: 20, topP: 0.9 }, 211],
    ['min-p 0.1, temperature 1.5', { temperature: 1.5, minP: 0.1 }, 97],
    ['top-k 1 (greedy through the sampled path)', { topK: 1 }, 97],
    ['repetition penalty 1.8', { repetitionPenalty: 1.8 }, 37],
  ];
  for (const [label, over, V] of cases) {
    it(`${label}, V=${V}`, async () => {
      const r = rng(V * 31 + label.length);
      const logits = uniform(r, V, -4, 4);
      const seen = over.repetitionPenalty ? [0, 3, 5, logits.indexOf(Math.max(...logits))] : [];
      const params = base(over);
      const expected = expectedProbs(logits, params, seen);
      const { cpu, gpu } = await sampleRows(logits, params, S, seen);
      for (const [name, tokens] of [['cpu', cpu], ['gpu', gpu]] as const) {
        const h = histogram(tokens, V);
        const off = h.map((c, i) => ({ i, c, want: expected[i]! * S })).filter((x) => Math.abs(x.c - x.want) > 1.0001);
        expect(off, `${name}: tokens whose count is off by more than 1`).toEqual([]);
      }
      // the two backends agree except where float rounding moves a stratum boundary
      const differ = Array.from(cpu).filter((t, i) => t !== gpu[i]).length;
      expect(differ).toBeLessThanOrEqual(2);
    });
  }
});

it('greedy: first index of the maximum, with the repetition penalty applied', async () => {
  const V = 300;
  const rows = 3;
  const r = rng(7);
  const logits = uniform(r, rows * V, -3, 3).map((x) => Math.round(x * 4) / 4); // ties
  const params = [GREEDY, GREEDY, { ...GREEDY, repetitionPenalty: 10 }].flatMap((p) => [...packSamplingParams(p)]);
  const seen = new Array<number>(rows * V).fill(0);
  const argmaxOf = (row: number[]) => row.indexOf(Math.max(...row));
  const top2 = argmaxOf(logits.slice(2 * V, 3 * V));
  seen[2 * V + top2] = 1;
  const res = await runBoth(
    () => {
      const l = input('logits', [rows, V]);
      const p = input('params', [rows, PARAM_STRIDE]);
      return {
        plain: argmax(l),
        greedy: sampleTokens({ logits: l, params: p, uniform: input('u', [rows]), seen: input('seen', [rows, V]) }, 'greedy'),
        viaSample: sampleTokens({ logits: l, params: p, uniform: input('u', [rows]), seen: input('seen', [rows, V]) }, 'sample'),
      };
    },
    {},
    { inputs: { logits, params, seen, u: [0.5, 0.5, 0.5] } },
  );
  const penalised = logits.slice(2 * V, 3 * V).map((x, i) => (i === top2 ? (x > 0 ? x / 10 : x * 10) : x));
  const want = [argmaxOf(logits.slice(0, V)), argmaxOf(logits.slice(V, 2 * V)), argmaxOf(penalised)];
  for (const backend of [res.cpu, res.gpu]) {
    expect(Array.from(backend.outputs.greedy!.data)).toEqual(want);
    expect(Array.from(backend.outputs.viaSample!.data)).toEqual(want);
    expect(Array.from(backend.outputs.plain!.data).slice(0, 2)).toEqual(want.slice(0, 2));
  }
});

it('PCG stream: identical on both backends, uniform in [0, 1)', async () => {
  const n = 257;
  const seeds = Array.from({ length: n }, (_, i) => seedState(i));
  const res = await runBoth(
    () => {
      let st = input('state', [n], 'u32');
      const us: Tensor[] = [];
      for (let i = 0; i < 4; i++) {
        const step = pcgNext(st);
        st = step.state;
        us.push(step.uniform.reshape(1, n));
      }
      return { state: st, u: Tensor.concat(us, 0) };
    },
    {},
    { inputs: { state: seeds } },
  );
  expect(Array.from(res.gpu.outputs.state!.data)).toEqual(Array.from(res.cpu.outputs.state!.data));
  expect(Array.from(res.gpu.outputs.u!.data)).toEqual(Array.from(res.cpu.outputs.u!.data));
  const u = Array.from(res.cpu.outputs.u!.data);
  expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
  expect(Math.max(...u)).toBeLessThan(1);
  const mean = u.reduce((a, b) => a + b, 0) / u.length;
  expect(Math.abs(mean - 0.5)).toBeLessThan(0.03);
  expect(new Set(u).size).toBeGreaterThan(u.length * 0.99);
});
