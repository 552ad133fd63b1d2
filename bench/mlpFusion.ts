// `bench mlp-fusion [--layers N] [--iters N]`: can a gated MLP's two batch-1 matvecs (gate/up, then down with the
// residual) be one dispatch? The down projection needs every intermediate activation, so one dispatch means each
// workgroup takes J intermediate columns (its 2J gate/up rows, then the down projection's J columns of all H rows)
// and the workgroups' partial sums meet in memory: as fixed point (2^-32 units, three i32 words) added with integer
// atomics, whose sum is exact in any order, so the result is deterministic, unlike float atomics. The readers decode it; the
// dispatch before zeroes the accumulator. This bench times a chain of L such MLPs (granite4h-350m-like's shape, its
// own weights a layer) both ways on the GPU's clock, after checking that both give the same residual stream.
import { getSharedDevice } from '../runtime/device.ts';
import { f16BitsToF32 } from '../base/tensorValues.ts';

const H = 768;
const I = 2048;
/** The dot of 8 packed f16 weights with 8 floats. */
const DOT8 = `fn dot8(v: vec4<u32>, a: vec4<f32>, b: vec4<f32>) -> f32 {
  return dot(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)), a) + dot(vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)), b);
}`;

/** Separate programs: gate/up (128 / SG rows a workgroup, a subgroup a row), then down + residual (the activation in its prologue); loads written out. */
const gateUp = (SG: number) => `enable subgroups;
@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> gu: array<f32>;
${DOT8}
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x * ${128 / SG}u + lid / ${SG}u;
  let lane = lid % ${SG}u;
${[...Array(H / 8 / SG).keys()].map((t) => `  let v${t} = w[row * ${H / 8}u + lane + ${t * SG}u];`).join('\n')}
  var s = 0.0;
${[...Array(H / 8 / SG).keys()].map((t) => `  s += dot8(v${t}, x[2u * (lane + ${t * SG}u)], x[2u * (lane + ${t * SG}u) + 1u]);`).join('\n')}
  s = subgroupAdd(s);
  if (lane == 0u) { gu[row] = s; }
}`;
const down = (SG: number) => `enable subgroups;
@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> gu: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> hin: array<f32>;
@group(0) @binding(3) var<storage, read_write> hout: array<f32>;
fn silu(x: vec4<f32>) -> vec4<f32> { return x / (1.0 + exp(-x)); }
${DOT8}
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x * ${128 / SG}u + lid / ${SG}u;
  let lane = lid % ${SG}u;
${[...Array(I / 8 / SG).keys()].map((t) => `  let v${t} = w[row * ${I / 8}u + lane + ${t * SG}u];`).join('\n')}
  var s = 0.0;
${[...Array(I / 8 / SG).keys()].map((t) => `  {
    let c = lane + ${t * SG}u;
    let a = silu(gu[2u * c]) * gu[${I / 4}u + 2u * c];
    let b = silu(gu[2u * c + 1u]) * gu[${I / 4}u + 2u * c + 1u];
    s += dot8(v${t}, a, b);
  }`).join('\n')}
  s = subgroupAdd(s);
  if (lane == 0u) { hout[row] = hin[row] + s; }
}`;

/**
 * The fused MLP: workgroup g takes intermediate columns g*J .. g*J+J-1; LPR lanes a down row (J/8 u32x4 each). Every
 * weight word is loaded first (they wait on nothing). A row's partial sum s is added as three signed integers,
 * s * 2^32 = A 2^42 + B 2^21 + C with |A|, |B|, |C| <= 2^21, into three i32 words: no carries, so the adds are
 * independent (their results unused: fire and forget), and 2^10 workgroups' adds cannot overflow.
 */
const fused = (J: number, SG: number, WG = 256, atomics = true, unroll = false) => {
  const range = (n: number) => [...Array(n).keys()];
  const warps = WG / SG;
  const perWarp = (2 * J) / warps; // gate/up rows a subgroup
  const loads = H / 8 / SG; // u32x4 a lane a row
  const LPR = J / 8;
  const rowsPerPass = WG / LPR;
  const passes = H / rowsPerPass;
  const add = (at: string, v: string) => (atomics ? `atomicAdd(&accout[${at}], i32(${v}));` : `atomicStore(&accout[${at}], i32(${v}));`);
  return `enable subgroups;
@group(0) @binding(0) var<storage, read> wgu: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> wd: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> hprev: array<f32>;
@group(0) @binding(3) var<storage, read> accin: array<i32>;
@group(0) @binding(4) var<storage, read_write> hout: array<f32>;
@group(0) @binding(5) var<storage, read_write> accout: array<atomic<i32>>;
@group(0) @binding(6) var<storage, read_write> acczero: array<i32>;
var<workgroup> xs: array<vec4<f32>, ${H / 4}>;
var<workgroup> gus: array<f32, ${2 * J}>;
var<workgroup> act: array<vec4<f32>, ${J / 4}>;
fn silu(x: f32) -> f32 { return x / (1.0 + exp(-x)); }
${DOT8}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sl: u32) {
  let g = wid.x;
  let warp = lid / ${SG}u;
${unroll ? [
    ...range(perWarp).flatMap((r) => [
      `  let local${r} = warp + ${r * warps}u;`,
      `  let row${r} = select(${I}u + g * ${J}u + local${r} - ${J}u, g * ${J}u + local${r}, local${r} < ${J}u);`,
      ...range(loads).map((t) => `  let v${r}_${t} = wgu[row${r} * ${H / 8}u + sl + ${t * SG}u];`),
    ]),
    `  let part = lid % ${LPR}u;`,
    ...range(passes).map((p) => `  let d${p} = wd[(lid / ${LPR}u + ${p * rowsPerPass}u) * ${I / 8}u + g * ${LPR}u + part];`),
  ].join('\n') : `${''}  var v: array<vec4<u32>, ${loads * perWarp}>;
  for (var r = 0u; r < ${perWarp}u; r++) {
    let local = warp + r * ${warps}u;
    let row = select(${I}u + g * ${J}u + local - ${J}u, g * ${J}u + local, local < ${J}u);
    for (var t = 0u; t < ${loads}u; t++) { v[r * ${loads}u + t] = wgu[row * ${H / 8}u + sl + t * ${SG}u]; }
  }
  let part = lid % ${LPR}u;
  var d: array<vec4<u32>, ${passes}>;
  for (var p = 0u; p < ${passes}u; p++) { d[p] = wd[(lid / ${LPR}u + p * ${rowsPerPass}u) * ${I / 8}u + g * ${LPR}u + part]; }`}
  // the input: the previous residual plus the accumulated MLP sums
  for (var k = lid; k < ${H}u; k += ${WG}u) {
    let x = hprev[k] + f32(accin[3u * k]) * 1024.0 + f32(accin[3u * k + 1u]) * 4.8828125e-4 + f32(accin[3u * k + 2u]) * 2.3283064365386963e-10;
    xs[k / 4u][k % 4u] = x;
    if (g == 0u) { hout[k] = x; }
  }
  if (g == 1u) { for (var k = lid; k < ${3 * H}u; k += ${WG}u) { acczero[k] = 0i; } }
  workgroupBarrier();
${unroll ? range(perWarp).map((r) => `  {
    var s = 0.0;
${range(loads).map((t) => `    s += dot8(v${r}_${t}, xs[2u * (sl + ${t * SG}u)], xs[2u * (sl + ${t * SG}u) + 1u]);`).join('\n')}
    s = subgroupAdd(s);
    if (sl == 0u) { gus[warp + ${r * warps}u] = s; }
  }`).join('\n') : `  for (var r = 0u; r < ${perWarp}u; r++) {
    var s = 0.0;
    for (var t = 0u; t < ${loads}u; t++) { let c = sl + t * ${SG}u; s += dot8(v[r * ${loads}u + t], xs[2u * c], xs[2u * c + 1u]); }
    s = subgroupAdd(s);
    if (sl == 0u) { gus[warp + r * ${warps}u] = s; }
  }`}
  workgroupBarrier();
  if (lid < ${J}u) { act[lid / 4u][lid % 4u] = silu(gus[lid]) * gus[${J}u + lid]; }
  workgroupBarrier();
${(unroll ? range(passes) : [-1]).map((p) => `${p < 0 ? `  for (var p = 0u; p < ${passes}u; p++) {` : '  {'}
    var s = dot8(${p < 0 ? 'd[p]' : `d${p}`}, act[2u * part], act[2u * part + 1u]);
${[1, 2, 4].filter((x) => x < LPR).map((x) => `    s += subgroupShuffleXor(s, ${x}u);`).join('\n')}
    if (part == 0u) {
      let row = lid / ${LPR}u + ${p < 0 ? `p * ${rowsPerPass}u` : `${p * rowsPerPass}u`};
      let a = round(s * 9.765625e-4);
      let r1 = s - a * 1024.0;
      let b = round(r1 * 2048.0);
      let c = round((r1 - b * 4.8828125e-4) * 4294967296.0);
${atomics ? '' : '      // probe: plain stores (the sums are wrong; what the atomics cost)\n'}      ${add('3u * row', 'a')}
      ${add('3u * row + 1u', 'b')}
      ${add('3u * row + 2u', 'c')}
    }
  }`).join('\n')}
}`;
};

function arg(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
}

export async function mlpFusionBench(argv: string[]): Promise<void> {
  const L = arg(argv, '--layers', 32);
  const iters = arg(argv, '--iters', 20);
  const device = (await getSharedDevice()).device;
  const info = device.adapterInfo as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const SG = info.subgroupMinSize ?? 0;
  if (!device.features.has('subgroups') || SG !== info.subgroupMaxSize || SG < 4) throw new Error('[bench] mlp-fusion needs subgroups of one size');
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const buf = (bytes: number) => device.createBuffer({ size: bytes, usage });
  // random 16-bit weights of magnitude 2^-10 .. 2^-5, layer by layer (no layer's weights stay in L2 for the next)
  let seed = 0x9e3779b9;
  const random16 = (n: number) => {
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
      out[i] = (seed & 0x83ff) | ((5 + ((seed >>> 16) % 5)) << 10);
    }
    return out;
  };
  const guBytes = 2 * I * H * 2;
  const dBytes = H * I * 2;
  // the CPU's residual stream (f64 sums), layer by layer as the weights are made
  const half = Float64Array.from({ length: 65536 }, (_, b) => f16BitsToF32(b));
  const h0 = Float32Array.from({ length: H }, (_, i) => Math.sin(i));
  const want = Float64Array.from(h0);
  const wgu: GPUBuffer[] = [];
  const wd: GPUBuffer[] = [];
  for (let l = 0; l < L; l++) {
    const g = random16(2 * I * H);
    const d = random16(H * I);
    const act = new Float64Array(I);
    const dotRow = (w: Uint16Array, row: number, x: ArrayLike<number>, n: number) => { let s = 0; for (let k = 0; k < n; k++) s += half[w[row * n + k]!]! * x[k]!; return s; };
    for (let j = 0; j < I; j++) { const gate = dotRow(g, j, want, H); act[j] = (gate / (1 + Math.exp(-gate))) * dotRow(g, I + j, want, H); }
    for (let r = 0; r < H; r++) want[r] = want[r]! + dotRow(d, r, act, I);
    const [bg, bd] = [buf(guBytes), buf(dBytes)];
    device.queue.writeBuffer(bg, 0, g);
    device.queue.writeBuffer(bd, 0, d);
    wgu.push(bg);
    wd.push(bd);
  }
  const pipe = (code: string) => device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
  const bind = (p: GPUComputePipeline, bufs: GPUBuffer[]) => device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: bufs.map((b, i) => ({ binding: i, resource: { buffer: b } })) });

  // separate: h[l] -> gu -> h[l + 1]
  const hs = Array.from({ length: L + 1 }, () => buf(H * 4));
  const gu = buf(2 * I * 4);
  const [pg, pd] = [pipe(gateUp(SG)), pipe(down(SG))];
  const separate = Array.from({ length: L }, (_, l) => [bind(pg, [wgu[l]!, hs[l]!, gu]), bind(pd, [wd[l]!, gu, hs[l]!, hs[l + 1]!])] as const);
  const encodeSeparate = (pass: GPUComputePassEncoder) => {
    for (const [g, d] of separate) {
      pass.setPipeline(pg); pass.setBindGroup(0, g); pass.dispatchWorkgroups((2 * I) / (128 / SG));
      pass.setPipeline(pd); pass.setBindGroup(0, d); pass.dispatchWorkgroups(H / (128 / SG));
    }
  };
  // fused: layer l reads hf[l] + acc[l], writes hf[l + 1] (its input, for the next) and accumulates into acc[l + 1]
  const hf = Array.from({ length: L + 1 }, () => buf(H * 4));
  const acc = Array.from({ length: L + 2 }, () => buf(3 * H * 4));
  const variants: { J: number; WG: number; atomics: boolean; unroll?: boolean }[] = [
    ...[32, 16, 8].map((J) => ({ J, WG: 256, atomics: true })),
    ...[16, 32, 64].flatMap((J) => [512, 1024].map((WG) => ({ J, WG, atomics: true }))),
    ...[16, 32].flatMap((J) => [256, 512, 1024].map((WG) => ({ J, WG, atomics: true, unroll: true }))),
    { J: 32, WG: 256, atomics: false },
  ];
  const fusedRuns = variants.filter(({ J, WG }) => (2 * J) % (WG / SG) === 0 && J / 8 <= SG && (H * J) % (8 * WG) === 0).map((v) => {
    const p = pipe(fused(v.J, SG, v.WG, v.atomics, v.unroll));
    const groups = Array.from({ length: L }, (_, l) => bind(p, [wgu[l]!, wd[l]!, hf[l]!, acc[l]!, hf[l + 1]!, acc[l + 1]!, acc[l + 2]!]));
    const name = `fused, ${I / v.J} workgroups of ${v.J} columns, ${v.WG} threads${v.unroll ? ', written out' : ''}${v.atomics ? '' : ', stores for atomics (probe: wrong sums)'}`;
    return { ...v, name, encode: (pass: GPUComputePassEncoder) => { pass.setPipeline(p); for (const g of groups) { pass.setBindGroup(0, g); pass.dispatchWorkgroups(I / v.J); } } };
  });

  const read = async (b: GPUBuffer, bytes: number) => {
    const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(b, 0, staging, 0, bytes);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0);
    staging.destroy();
    return out;
  };
  const once = async (encode: (pass: GPUComputePassEncoder) => void) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    encode(pass);
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  const reset = () => {
    device.queue.writeBuffer(hs[0]!, 0, h0);
    device.queue.writeBuffer(hf[0]!, 0, h0);
    for (const a of acc) device.queue.writeBuffer(a, 0, new Int32Array(3 * H));
  };
  // the check: the residual stream after L layers, both ways (the fused one's last sums decoded here)
  reset();
  await once(encodeSeparate);
  const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const within = (got: (k: number) => number) => want.reduce((m, x, k) => Math.max(m, Math.abs(got(k) - x)), 0).toExponential(2);
  const separateOut = new Float32Array(await read(hs[L]!, H * 4));
  console.log(`largest |h| after ${L} layers ${scale.toFixed(3)}; separate kernels within ${within((k) => separateOut[k]!)} of the CPU's f64 sums`);
  for (const run of fusedRuns) {
    reset();
    await once(run.encode);
    const base = new Float32Array(await read(hf[L]!, H * 4));
    const words = new Int32Array(await read(acc[L]!, 3 * H * 4));
    console.log(`${run.name}: within ${within((k) => base[k]! + words[3 * k]! * 2 ** 10 + words[3 * k + 1]! * 2 ** -11 + words[3 * k + 2]! * 2 ** -32)}`);
  }
  // GPU time of `iters` chains in one pass, by wall clock after recording (best of 5)
  const time = async (encode: (pass: GPUComputePassEncoder) => void) => {
    let best = Infinity;
    for (let round = 0; round < 5; round++) {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (let i = 0; i < iters; i++) encode(pass);
      pass.end();
      const cmd = enc.finish();
      const t0 = performance.now();
      device.queue.submit([cmd]);
      await device.queue.onSubmittedWorkDone();
      best = Math.min(best, (performance.now() - t0) / iters);
    }
    return (best * 1000) / L; // us a layer
  };
  const bytes = guBytes + dBytes;
  const line = (what: string, us: number, dispatches: number) => console.log(`${what}: ${us.toFixed(2)} us a layer (${dispatches} dispatch${dispatches > 1 ? 'es' : ''}), ${(bytes / us / 1e3).toFixed(0)} GB/s of weights`);
  line('separate gate/up + down', await time(encodeSeparate), 2);
  for (const run of fusedRuns) line(run.name, await time(run.encode), 1);
  line('separate gate/up + down (again)', await time(encodeSeparate), 2);
}
