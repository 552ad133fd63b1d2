// A hybrid that is in no model zoo, written in user code from Strata's blocks: Mamba-2 layers, sliding-window
// attention every third layer, and a last layer that attends with an earlier layer's KV (no KV of its own).
// It compiles the model, runs it on random weights, and prints its memory plan and a few greedy tokens.
//
//   npx tsx examples/custom-hybrid.ts
import type { LayerMemorySpec } from '../caches/spec.ts';
import { memoryReport } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm, rope, ropeInvFreq } from '../dsl/nn/basic.ts';
import type { Tensor } from '../dsl/tensor.ts';
import type { Mamba2MixerConfig } from '../models/config.ts';
import { mamba2Layer, mamba2States } from '../models/families/mamba2.ts';
import type { ModelDef } from '../models/model.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { argmax } from '../runtime/parity.ts';
import { randomCheckpoint } from '../runtime/randomWeights.ts';

const hidden = 64;
const vocab = 256;
const layers = 7; // 0 1 [2 attn] 3 4 [5 attn] 6 (attends with layer 5's KV)
const heads = 4;
const kvHeads = 2;
const headDim = 16;
const window = 8;

const mixer: Mamba2MixerConfig = {
  numHeads: 4, headDim: 32, numGroups: 1, stateSize: 16, convKernel: 4, innerSize: 128, convDim: 128 + 2 * 16,
  chunkSize: 16, convBias: true, inProjBias: false, outProjBias: false, gatedNorm: 'full_width', normBeforeGate: false,
  timeStepLimit: [0, Infinity], timeStepMin: 0.001, timeStepMax: 0.1, normEps: 1e-5,
};

type Kind = 'mamba2' | 'sliding' | 'shared';
const kinds: Kind[] = Array.from({ length: layers }, (_, l) => (l === layers - 1 ? 'shared' : l % 3 === 2 ? 'sliding' : 'mamba2'));
const lastSliding = kinds.lastIndexOf('sliding');

function attention(ctx: StepContext, l: number, x: Tensor): Tensor {
  const { S, T } = ctx;
  const w = (n: string, shape: number[]) => ctx.weight(`layers.${l}.attn.${n}`, shape);
  const invFreq = ctx.constant('rope.inv_freq', [headDim / 2]);
  const q = rope(linear(x, w('q.weight', [heads * headDim, hidden])).reshape(S, T, heads, headDim), ctx.positions, invFreq, headDim);
  // the sharing layer computes only queries: keys and values come from layer `lastSliding`'s cache
  const own = kinds[l] !== 'shared';
  const k = own ? rope(linear(x, w('k.weight', [kvHeads * headDim, hidden])).reshape(S, T, kvHeads, headDim), ctx.positions, invFreq, headDim) : undefined;
  const v = own ? linear(x, w('v.weight', [kvHeads * headDim, hidden])).reshape(S, T, kvHeads, headDim) : undefined;
  const a = ctx.attend(l, q, k, v, { scale: headDim ** -0.5 });
  return linear(a.reshape(S, T, heads * headDim), w('o.weight', [hidden, heads * headDim]));
}

export const customHybrid: ModelDef = {
  family: 'custom-hybrid',
  vocabSize: vocab,
  hiddenSize: hidden,
  eosTokenIds: [],
  memory: () =>
    kinds.map((kind): LayerMemorySpec => {
      if (kind === 'mamba2') return { states: mamba2States(mixer) };
      if (kind === 'sliding') return { kv: { kvHeads, headDim, window }, states: [] };
      return { kv: { kvHeads, headDim, window, sharesWith: lastSliding }, states: [] };
    }),
  constants: () => ({ 'rope.inv_freq': ropeInvFreq(headDim, 10000) }),
  forward(ctx) {
    const w = (n: string, shape: number[]) => ctx.weight(n, shape);
    let h = w('embed.weight', [vocab, hidden]).gather(ctx.tokens);
    for (let l = 0; l < layers; l++) {
      const x = rmsnorm(h, w(`layers.${l}.norm.weight`, [hidden]), 1e-5);
      h = h.add(kinds[l] === 'mamba2' ? mamba2Layer(ctx, l, mixer, hidden, x, { prefix: `layers.${l}.mamba.`, activation: 'silu' }) : attention(ctx, l, x));
      const y = rmsnorm(h, w(`layers.${l}.mlp_norm.weight`, [hidden]), 1e-5);
      h = h.add(gatedMlp(y, w(`layers.${l}.mlp.gate.weight`, [128, hidden]), w(`layers.${l}.mlp.up.weight`, [128, hidden]), w(`layers.${l}.mlp.down.weight`, [hidden, 128])));
    }
    return rmsnorm(h, w('norm.weight', [hidden]), 1e-5);
  },
  logits: (ctx, hiddenStates) => linear(hiddenStates, ctx.weight('embed.weight', [vocab, hidden])),
};

export async function runCustomHybrid(log: (line: string) => void = console.log): Promise<number[]> {
  const runtime = new GpuRuntime(await getSharedDevice());
  const runner = new ModelRunner(runtime, customHybrid, randomCheckpoint(customHybrid, { scale: 0.2 }), { slots: 1, capacity: 64, chunks: [1, 8] });
  const plan = memoryReport(customHybrid.memory(), runner.memory);
  log('layer  kind        kv bytes  state bytes  shares KV with');
  for (const l of plan.layers) log(`${String(l.layer).padStart(5)}  ${l.kind.padEnd(10)}  ${String(l.kvBytes).padStart(8)}  ${String(l.stateBytes).padStart(11)}  ${l.sharesKvWith ?? '-'}`);
  log(`total ${plan.totalBytes} bytes`);
  const tokens = [1, 2, 3, 4, 5];
  let logits = await runner.prefill(0, tokens, 'last');
  for (let i = 0; i < 20; i++) {
    const next = argmax(logits);
    tokens.push(next);
    [logits] = (await runner.step([{ slot: 0, tokens: [next] }], 'last', { rows: 1, tokens: 1 })) as [Float32Array];
  }
  log(`tokens: ${tokens.join(' ')}`);
  return tokens;
}

if (process.argv[1]?.endsWith('custom-hybrid.ts')) {
  runCustomHybrid().then(() => process.exit(0), (e) => (console.error(e), process.exit(1)));
}
