// The compiled schedule as data: the decode dispatch count of every bench configuration is pinned (a fusion or
// grouping regression fails here, not only in a benchmark), and the text form `strata inspect --kernels` prints
// is snapshotted for a small model. Compile only: no GPU.
import { describe, expect, test } from 'vitest';
import { BENCH_CONFIGS } from '../../bench/configs.ts';
import { compileBucket, kernelSchedule } from '../../cli/kernelSchedule.ts';
import { loadConfig, parseConfig } from '../../models/config.ts';
import { buildModel } from '../../models/registry.ts';
import { kernelOptions } from '../../caches/stepContext.ts';
import { GPU_DECODE_SPLITS } from '../../runtime/compileLimits.ts';

// An adapter like the H200's and lavapipe's: subgroups, 16 storage buffers per stage.
const LIMITS = { subgroups: true, maxStorageBuffersPerShaderStage: 16 };

describe('decode dispatches per step of the bench configurations (16-bit weights, 264 positions as in the bench)', () => {
  // Measured with this schedule; issue 15 asks for <= 110 (llama-400m) and <= 140 (granite4h-350m-like) at batch 1.
  // The position update (pos[slot] += valid) is one scatter sharing the LM head's dispatch: no dispatch of its own
  // (2 without one-workgroup fusion, DeviceLimits.oneGroupFusion).
  // The GPU default: every decode attention computes its own q/k/v rows (DeviceLimits.attentionProjection on), one
  // dispatch fewer for each attention layer at any batch; with STRATA_ATTN_PROJECTION=batched batch 1 keeps the
  // separate q/k/v matvecs (the first count).
  // The last count: batch 1 with each dense gated MLP as one kernel (DeviceLimits.mlpFusion, the GPU default; batched
  // buckets have no fused MLPs, passes/fuseMlp.ts takes one row): one dispatch fewer a layer (granite4h-350m-like's shared MLPs, llama-400m's MLPs, jamba-small's 4 SwiGLU MLPs; its
  // MoE experts keep their shared kernels).
  const PINNED: Record<string, [number, number, number, number]> = {
    'llama-400m': [121, 97, 97, 73],
    'granite4h-350m-like': [161, 157, 157, 125],
    // jamba-small, 8 layers: 7 Mamba-1 layers of 4 dispatches (in_proj with the embedding and norm; conv + x_proj;
    // selective_step, writing the SSM state in place; the conv state's scatter grouped with out_proj + residual: 6
    // before the fused step), 4 SwiGLU MLPs of 2, 4 MoE layers of 2 (router logits grouped with the experts'
    // gate/up; the top-2 selection inlined into the down projections + residual: 5 when the selection had 2
    // kernels of its own), 1 attention layer of 3 (2 computing its q/k/v), the final norm + LM head with the
    // position update: 48, 47 with the projection
    'jamba-small': [48, 47, 47, 43],
  };
  for (const [name, [separate, one, eight, fused]] of Object.entries(PINNED))
    test(name, () => {
      const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, `${name}.json`));
      const count = (rows: number, attentionProjection: boolean | 'batched', mlpFusion = false) =>
        compileBucket(model, () => 'f16', { rows, tokens: 1, capacity: 264, limits: { ...LIMITS, attentionProjection, mlpFusion, mlpThreads: 1024, maxComputeWorkgroupStorageSize: 32768 } }).kernels.length;
      expect([count(1, 'batched'), count(1, true), count(8, true), count(1, true, true)]).toEqual([separate, one, eight, fused]);
    });
});

// On a GPU with subgroup matrices (the H200's limits) batched decode's projections take the tiled kernel
// (DeviceLimits.tiledRows), their norms still fused as phases: llama-400m and granite4h-350m-like keep their batch-8
// counts; jamba-small's 4 MoE router matvecs (4 columns: no tile) no longer share a dispatch with the experts'
// gate/up: 47 -> 51 (measured faster all the same: bench/results/2026-12-03-h200-tiled-rows/)
test('batch-8 decode on tiles (subgroup matrices): dispatches of the bench configurations', () => {
  const limits = { ...LIMITS, attentionProjection: 'batched' as const, maxComputeWorkgroupStorageSize: 49152, subgroupMatrix: { m: 16, n: 16, k: 16, size: 32 }, tiledRows: 2 };
  const counts = Object.keys(BENCH_CONFIGS).map((name) => {
    const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, `${name}.json`));
    const kernels = compileBucket(model, () => 'f16', { rows: 8, tokens: 1, capacity: 264, limits }).kernels;
    return [name, kernels.length, kernels.filter((k) => k.templates.some((t) => t.startsWith('tiled'))).length];
  });
  expect(counts).toEqual([
    ['llama-400m', 97, 73],
    ['granite4h-350m-like', 157, 125],
    ['jamba-small', 51, 35],
  ]);
});

test('granite4h-350m-like decode with fused MLPs (DeviceLimits.mlpFusion): one kernel a shared MLP, under issue 15\'s 140', () => {
  // each layer's shared MLP (gate/up, SiLU gate, down) is one kernel (mlp) whose 64 workgroups add their partial sums
  // as fixed point; the next layer's kernels decode them; each accumulator is zeroed by another fused kernel
  const model = buildModel(parseConfig(BENCH_CONFIGS['granite4h-350m-like']!, 'granite4h-350m-like.json'));
  const program = compileBucket(model, () => 'f16', { rows: 1, tokens: 1, capacity: 264, limits: { ...LIMITS, maxComputeWorkgroupStorageSize: 32768, attentionProjection: true, mlpFusion: true, mlpThreads: 1024 } });
  const mlps = program.kernels.filter((k) => k.templates.includes('mlp'));
  expect(program.kernels).toHaveLength(125);
  expect(mlps).toHaveLength(32);
  expect(mlps.every((k) => k.workgroups[0] === 64 && k.workgroupSize === 1024)).toBe(true);
  // every accumulator is zeroed by exactly one other fused kernel: 32 zeroing loops in all
  expect(mlps.map((k) => (k.wgsl.match(/atomicStore/g) ?? []).length).reduce((a, b) => a + b, 0)).toBe(32);
});

test('llama-400m decode with the attention projection (DeviceLimits.attentionProjection): 24 dispatches fewer', () => {
  // each layer's q/k/v matvec is computed inside its attention kernel (attention/decode+qkv), which also writes
  // the layer's KV cache rows: 5 -> 4 dispatches a layer, 121 -> 97 a step
  const model = buildModel(parseConfig(BENCH_CONFIGS['llama-400m']!, 'llama-400m.json'));
  const kernels = compileBucket(model, () => 'f16', { rows: 1, tokens: 1, capacity: 264, limits: { ...LIMITS, maxComputeWorkgroupStorageSize: 32768, attentionProjection: true } }).kernels;
  expect(kernels).toHaveLength(97);
  expect(kernels.filter((k) => k.templates.includes('attention/decode+qkv'))).toHaveLength(24);
});

test('strata inspect --kernels --attention-projection: the plan says what the attention computes and writes', async () => {
  const text = await kernelSchedule('test/fixtures/hf/llama', { rows: 1, tokens: 1, capacity: 256, limits: { ...LIMITS, attentionProjection: true } });
  expect(text).toContain('rule projection: %111 attention(1,2,2,16) computes %27 %32 %37 (no buffers) and writes %80 %81 (no kernels)');
  expect(text).toContain('dispatches=9');
});

test('strata inspect --kernels --mlp-fusion: the plan and the schedule name the fused MLP kernels', async () => {
  const schedule = (mlpFusion: boolean) => kernelSchedule('test/fixtures/hf/llama', { rows: 1, tokens: 1, capacity: 256, limits: { ...LIMITS, mlpFusion } });
  const text = await schedule(true);
  // the fixture's 2 layers: each MLP one kernel of 4 workgroups (128 intermediate columns, 32 a workgroup)
  expect(text.match(/fused_mlp\(1,1,64\) mlp grid 4 wg 256/g)).toHaveLength(2);
  expect(text).toContain('dispatches=9');
  expect(await schedule(false)).toContain('dispatches=11');
});

test('granite4h-350m-like decode with the in_proj projection (DeviceLimits.ssdProjection): 28 dispatches fewer', () => {
  // each Mamba layer's in_proj matvec is computed inside its ssd_step kernel (ssdstep/in_proj), which also stores the
  // z columns the gated norm reads: 5 -> 4 dispatches for each of the 28 Mamba layers, 161 -> 133 a step; with the
  // attention projection too, the 4 attention layers' q/k/v matvecs go as well: 129
  const model = buildModel(parseConfig(BENCH_CONFIGS['granite4h-350m-like']!, 'granite4h-350m-like.json'));
  const kernels = (attentionProjection: boolean, rows: number) => compileBucket(model, () => 'f16', { rows, tokens: 1, capacity: 264, limits: { ...LIMITS, maxComputeWorkgroupStorageSize: 32768, ssdProjection: true, attentionProjection } }).kernels;
  for (const rows of [1, 8]) {
    const ssd = kernels(false, rows);
    expect(ssd).toHaveLength(133);
    expect(ssd.filter((k) => k.templates.includes('ssdstep/in_proj'))).toHaveLength(28);
    const both = kernels(true, rows);
    expect(both).toHaveLength(129);
    expect(both.filter((k) => k.templates.includes('attention/decode+qkv'))).toHaveLength(4);
  }
});

test('a portable 8 storage buffers: the bench configurations\' 128-token prefills compile, the scans as their compositions', () => {
  // The selective scan binds 9 buffers in jamba-small and granite4h-350m-like (Mamba-2's prefill is the same op), so
  // passes/decomposeKernels.ts puts its chunked composition in its place; the composition joins its chunks' y in a
  // tree of concats of 4, which the bindings rule can split (a flat concat of 8 chunks needed 9 buffers: jamba-small
  // did not compile at 8 before). Many more dispatches than with the kernel (317 and 116 at 16 buffers). Tiles read
  // their left operands from buffers (DeviceLimits.tiledPlainLeft): 217, 1,521 and 589 with them in the prologues.
  const counts = Object.keys(BENCH_CONFIGS).map((name) => {
    const model = buildModel(parseConfig(BENCH_CONFIGS[name]!, `${name}.json`));
    const kernels = compileBucket(model, () => 'f16', { rows: 1, tokens: 128, capacity: 264, limits: { ...LIMITS, maxStorageBuffersPerShaderStage: 8 } }).kernels;
    return [name, kernels.length, kernels.filter((k) => k.templates.includes('selscan')).length];
  });
  expect(counts).toEqual([
    ['llama-400m', 193, 0],
    ['granite4h-350m-like', 1549, 0],
    ['jamba-small', 414, 0],
  ]);
});

test('jamba-small prefill (1 row, 128 tokens): one selective_scan kernel per Mamba-1 layer', () => {
  // 7 Mamba-1 layers: each scan is one selscan kernel writing the SSM state in place; with the chunked
  // composition instead (STRATA_SELECTIVE_SCAN=0, 8 chunks of 16 a layer) the bucket has 219 kernels. The maps
  // that tiles read (the scans' gated outputs, the conv's activations) are kernels of their own, 7 of which shared a
  // tile's dispatch before (DeviceLimits.tiledPlainLeft: 102 with them in the tiles' prologues, measured slower)
  const model = buildModel(parseConfig(BENCH_CONFIGS['jamba-small']!, 'jamba-small.json'));
  const kernels = compileBucket(model, () => 'f16', { rows: 1, tokens: 128, capacity: 264, limits: LIMITS }).kernels;
  expect(kernels.filter((k) => k.templates.includes('selscan'))).toHaveLength(7);
  expect(kernels).toHaveLength(116);
});

test('strata inspect --kernels: the decode schedule of the llama fixture', async () => {
  const text = await kernelSchedule('test/fixtures/hf/llama', { rows: 1, tokens: 1, capacity: 256, limits: LIMITS });
  expect(text).toMatchInlineSnapshot(`
    "plan kernels=16 buffers-chosen=50
      rule inlining: %37 matmul(1,1,32) gets a buffer (a reduction of 64 in a scatter kernel)
      rule inlining: %168 matmul(1,1,32) gets a buffer (a reduction of 64 in a scatter kernel)
        %27 matmul(1,1,64) matvec (generic U2 cols 16) grid 4 wg 32 inlines 11 reads [%24 %0 %10 %12]
        %32 matmul(1,1,32) matvec (generic U2 cols 16) grid 2 wg 32 inlines 11 reads [%29 %0 %10 %12]
        %37 matmul(1,1,32) matvec (generic U2 cols 16) grid 2 wg 32 inlines 11 reads [%34 %0 %10 %12]
       %111 attention(1,2,2,16) attention/decode grid 4 wg 256 inlines 99 reads [%2 %1 %3 %37 %32 %38 %27 %80 %81]
       %119 add(1,1,64) matvec (generic U2 cols 16) grid 4 wg 32 inlines 5 reads [%115 %111 %0 %10]
       %140 mul(1,1,128) matvec (generic U2 cols 8) grid 16 wg 32 inlines 13 reads [%130 %119 %120 %131]
       %144 add(1,1,64) matvec (generic U2 cols 16) grid 4 wg 32 inlines 1 reads [%132 %140 %119]
       %158 matmul(1,1,64) matvec (generic U2 cols 16) grid 4 wg 32 inlines 10 reads [%155 %144 %145]
       %163 matmul(1,1,32) matvec (generic U2 cols 16) grid 2 wg 32 inlines 10 reads [%160 %144 %145]
       %168 matmul(1,1,32) matvec (generic U2 cols 16) grid 2 wg 32 inlines 10 reads [%165 %144 %145]
       %203 attention(1,2,2,16) attention/decode grid 4 wg 256 inlines 99 reads [%2 %1 %3 %168 %163 %38 %158 %190 %191]
       %211 add(1,1,64) matvec (generic U2 cols 16) grid 4 wg 32 inlines 4 reads [%207 %203 %144]
       %232 mul(1,1,128) matvec (generic U2 cols 8) grid 16 wg 32 inlines 13 reads [%222 %211 %212 %223]
       %236 add(1,1,64) matvec (generic U2 cols 16) grid 4 wg 32 inlines 1 reads [%224 %232 %211]
       %255 matmul(1,256) matvec (generic U2 cols 16) grid 16 wg 32 inlines 16 reads [%253 %2 %236 %237]
       %257 scatter(1) scatter grid 1 wg 32 inlines 2 reads [%1 %3 %2]
    schedule bucket={"rows":1,"tokens":1} dispatches=11
        0 matvec+matvec+matvec   grid 8       wg 32  read  96.3KiB write     512B  matmul*3 mul*9 rsqrt*3 add*3 mean*3
        1 attention/decode       grid 4       wg 256 read     556B write  64.3KiB  attention add*8 mul*12 cos*2 cast*2 iota*4 sin*2 sub*2 and*3 le ge scatter*2 where*2 lt*4
        2 matvec                 grid 4       wg 32  read  80.3KiB write     256B  add matmul
        3 matvec                 grid 16      wg 32  read  64.5KiB write     512B  mul*4 matmul*2 rsqrt add mean silu
        4 matvec                 grid 4       wg 32  read  32.8KiB write     256B  add matmul
        5 matvec+matvec+matvec   grid 8       wg 32  read  32.5KiB write     512B  matmul*3 mul*9 rsqrt*3 add*3 mean*3
        6 attention/decode       grid 4       wg 256 read     556B write  64.5KiB  attention add*8 mul*12 cos*2 cast*2 iota*4 sin*2 sub*2 and*3 le ge scatter*2 where*2 lt*4
        7 matvec                 grid 4       wg 32  read  16.8KiB write     256B  add matmul
        8 matvec                 grid 16      wg 32  read  64.5KiB write     512B  mul*4 matmul*2 rsqrt add mean silu
        9 matvec                 grid 4       wg 32  read  32.8KiB write     256B  add matmul
       10 matvec+scatter         grid 17      wg 32  read  64.5KiB write   1.0KiB  matmul add*3 sub iota mul*3 rsqrt mean scatter
      total read 485.9KiB, written 132.8KiB; 8 distinct kernels (pipelines to compile)"
  `);
});

// H2O's scores are the probabilities the attention kernel writes after each output row (the op's `weights`); the
// step only sums them into the score state, in the kernel that computes the state's next value anyway. The softmax
// traced beside the kernel (a second q.k with its RoPE, exp, sum: one dispatch more per layer) is gone.
test('an h2o layer takes its scores from the attention kernel: decode dispatches of the llama fixture', async () => {
  const model = buildModel(await loadConfig('test/fixtures/hf/llama'));
  const H2O = { kind: 'h2o', recent: 3, heavy: 4 } as const;
  const program = (kvPolicy?: typeof H2O) => compileBucket(model, () => 'f32', { rows: 1, tokens: 1, capacity: 64, limits: LIMITS, ...(kvPolicy ? { kvPolicy } : {}) });
  const [dense, h2o] = [program(), program(H2O)];
  // two h2o layers: eviction (ranking, moves of K/V rows, positions) and the score update cost 6 dispatches (10 with
  // the moved rows gathered by kernels of their own and the one-workgroup scatters in dispatches of their own; 16 with
  // the traced softmax and the K and V moves, positions and scores written one dispatch apiece)
  expect([dense.kernels.length, h2o.kernels.length]).toEqual([11, 17]);
  // each layer moves its K and V rows in one dispatch, reading the rows it moves from the caches it writes
  expect(h2o.kernels.filter((k) => k.templates.filter((t) => t === 'scatter').length === 2)).toHaveLength(2);
  const attention = h2o.kernels.filter((k) => k.templates.includes('attention/decode'));
  expect(attention).toHaveLength(2);
  // each writes rows of head dim 16 + 7 entries' probabilities, the probabilities after the output
  for (const k of attention) expect(k.wgsl).toMatch(/\[\(gi \* 23u \+ 16u \+ /);
  // no score is computed anywhere else: no q.k product and no exp outside the projections and the attention kernels
  const others = h2o.kernels.filter((k) => k.templates.every((t) => !t.startsWith('attention') && t !== 'matvec'));
  expect(others.length).toBeGreaterThan(5);
  for (const k of others) expect(k.ops).not.toMatch(/\b(matmul|exp)\b/);
});

test('llama-400m prefill (1 row, 128 tokens): q and k are read through their reshapes, not copied', () => {
  // 8 dispatches a layer: the norm's statistic, q/k/v on tiles (one dispatch), both cache scatters, attention, o, the
  // norm, gate/up, down. Materialising the shared reshape of q (RoPE reads it twice) instead of the matmul under it
  // added a kernel that copied one buffer into another, for q and for k: 266 dispatches
  const model = buildModel(parseConfig(BENCH_CONFIGS['llama-400m']!, 'llama-400m.json'));
  const kernels = compileBucket(model, () => 'f16', { rows: 1, tokens: 128, capacity: 264, limits: LIMITS }).kernels;
  expect(kernels.filter((k) => k.templates.every((t) => t === 'map'))).toHaveLength(0);
  expect(kernels).toHaveLength(193);
});

test('granite4h-350m-like prefill: the shared MLP\'s output_linear and its residual add are one tiled kernel; each SSD one selective_scan kernel', () => {
  // the MLP runs on flattened rows, reshaped back before the add: the tiled epilogue reads through that reshape of a
  // leading 1 (before, the add was a map kernel of its own in each of the 32 layers, 514 dispatches)
  const model = buildModel(parseConfig(BENCH_CONFIGS['granite4h-350m-like']!, 'granite4h-350m-like.json'));
  const kernels = () => compileBucket(model, () => 'f16', { rows: 1, tokens: 128, capacity: 264, limits: LIMITS }).kernels;
  const fused = kernels();
  expect(fused.filter((k) => k.name.endsWith('_map_add'))).toHaveLength(0);
  expect(fused.filter((k) => k.name.endsWith('_tiled_add'))).toHaveLength(64); // out_proj / o_proj and output_linear
  // each Mamba-2 layer's SSD is the selective_scan kernel (dsl/nn/mamba2.ts ssdSelective), its state written in place
  expect(fused.filter((k) => k.templates.join() === 'selscan')).toHaveLength(28);
  // 32 maps more than with the left operands in the tiles' prologues (DeviceLimits.tiledPlainLeft, 285): the
  // shared MLP's gated activation, which its down projection's tile reads, is a kernel of its own in each layer
  expect(fused).toHaveLength(317);
  // only the norms from buffers (tiledPlainLeft 'norms', measured slower): the activation back in the prologue
  const norms = compileBucket(model, () => 'f16', { rows: 1, tokens: 128, capacity: 264, limits: { ...LIMITS, tiledPlainLeft: 'norms' } }).kernels;
  expect(norms.filter((k) => k.templates.join() === 'map')).toHaveLength(0);
  expect(norms).toHaveLength(285);
  // the chunked SSD algorithm instead (STRATA_SSD_SCAN=0): its dt cumsum (one workgroup, no barrier) shares the
  // conv's dispatch (anyLargerWorkgroup), 508 -> 480 (with the left operands in the tiles' prologues; 523 without)
  kernelOptions.fusedSsdScan = false;
  try {
    const chunked = kernels();
    expect(chunked.filter((k) => k.name === `${k.name.split('_')[0]}_scan_cumsum`)).toHaveLength(0);
    expect(chunked.filter((k) => k.name.endsWith('_map+map+scan_permute+silu+cumsum'))).toHaveLength(28);
    expect(chunked).toHaveLength(523);
  } finally {
    kernelOptions.fusedSsdScan = true;
  }
});

test('llama-400m decode with its attention over 8 key slices (DeviceLimits.decodeSplits): one combine kernel a layer more', () => {
  const model = buildModel(parseConfig(BENCH_CONFIGS['llama-400m']!, 'llama-400m.json'));
  const kernels = compileBucket(model, () => 'f16', { rows: 1, tokens: 1, capacity: 264, limits: { ...LIMITS, attentionProjection: true, maxComputeWorkgroupStorageSize: 32768, decodeSplits: { slices: 8, from: 0, sequences: 1 } } }).kernels;
  // a workgroup a query row and slice; the q/k/v matvec comes back (the projection takes only whole attentions),
  // and the combine is one map (its reductions nest: the o-projection's matvec does not inline it): 121 + 24
  const split = kernels.filter((k) => k.templates.join() === 'attention/split');
  expect(split).toHaveLength(24);
  expect(split[0]!.workgroups[0]).toBe(16 * 8);
  expect(kernels.filter((k) => k.templates.join() === 'map')).toHaveLength(24);
  expect(kernels).toHaveLength(145);
});

test('the GPU default traces decode attention over 8 slices where a cache holds more than 512 keys, for 1 or 2 sequences: the bench\'s caches keep one slice', () => {
  const model = buildModel(parseConfig(BENCH_CONFIGS['llama-400m']!, 'llama-400m.json'));
  const limits = { ...LIMITS, attentionProjection: true, maxComputeWorkgroupStorageSize: 32768, decodeSplits: GPU_DECODE_SPLITS };
  const splitKernels = (capacity: number, rows = 1) => compileBucket(model, () => 'f16', { rows, tokens: 1, capacity, limits }).kernels.filter((k) => k.templates.join() === 'attention/split').length;
  expect([264, 512, 513, 4096].map((capacity) => splitKernels(capacity))).toEqual([0, 0, 24, 24]);
  // 1 or 2 sequences: 8 sequences' one-slice kernels (128 workgroups) fill the GPU already
  expect([1, 2, 4, 8].map((rows) => splitKernels(4096, rows))).toEqual([24, 24, 0, 0]);
  // a prefill bucket never splits
  expect(compileBucket(model, () => 'f16', { rows: 1, tokens: 16, capacity: 4096, limits }).kernels.some((k) => k.templates.join().startsWith('attention/split'))).toBe(false);
});
