// Probe: does Dawn on this adapter expose chromium-experimental-subgroup-matrix, with which configs, and how fast is
// a hand-written subgroup-matrix GEMM (x f32 [M,K] @ W f16 [N,K]^T, operands staged in workgroup memory as f16, the
// result through workgroup memory as f32, as a Strata kernel with an epilogue would do) at the prefill shapes?
// node bench/device/sm-probe.mjs   (needs the `webgpu` package; prints one line per case)
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const toggles = ['vulkan_enable_f16_on_nvidia', 'allow_unsafe_apis', 'use_vulkan_memory_model', ...(process.env.EXTRA_TOGGLES ?? '').split(',').filter(Boolean)];
const gpu = create(['disable-dawn-features=timestamp_quantization', `enable-dawn-features=${toggles.join(',')}`]);
const adapter = await gpu.requestAdapter();
const info = adapter.info;
console.log('adapter', info.vendor, info.architecture, info.device, info.description, 'subgroup', info.subgroupMinSize, info.subgroupMaxSize);
console.log('features', [...adapter.features].sort().join(' '));
console.log('configs', JSON.stringify(info.subgroupMatrixConfigs));
const want = ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups', 'timestamp-query'].filter((f) => adapter.features.has(f));
if (!adapter.features.has('chromium-experimental-subgroup-matrix')) { console.log('NO SUBGROUP MATRIX'); process.exit(0); }
const requiredLimits = {};
for (const k in adapter.limits) if (typeof adapter.limits[k] === 'number') requiredLimits[k] = adapter.limits[k];
const device = await adapter.requestDevice({ requiredFeatures: want, requiredLimits });
device.addEventListener('uncapturederror', (e) => console.log('GPU ERROR', e.error.message));
const cfg = [...info.subgroupMatrixConfigs].filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32').sort((a, b) => b.M * b.N - a.M * a.N)[0];
console.log('using config', JSON.stringify(cfg));
const SG = info.subgroupMaxSize;

function shader(M, N, K, p) {
  const { TM, TN, TK, SGM, SGN, SK, BD } = p;
  const [FM, FN] = [TM / SGM / cfg.M, TN / SGN / cfg.N];
  const WG = SGM * SGN * SK * SG;
  const ST = TK + 8; // row stride of the f16 tiles (80 bytes at TK 32: no bank alignment of rows)
  const AV = (TM * TK) / 4, BV = (TN * TK) / 8; // vec4 loads per step: A as f32x4, B as u32x4 (8 halfs)
  const [LA, LB] = [AV / (WG / SK), BD ? 0 : BV / (WG / SK)]; // per thread, per slice
  if (!Number.isInteger(LA) || !Number.isInteger(LB) || LA < 1 || (LB < 1 && !BD)) return undefined;
  const L = [];
  L.push('enable f16;', 'enable chromium_experimental_subgroup_matrix;', 'diagnostic(off, chromium.subgroup_matrix_uniformity);');
  L.push('@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;', BD ? '@group(0) @binding(1) var<storage, read> w: array<f16>;' : '@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;', '@group(0) @binding(2) var<storage, read_write> c: array<f32>;');
  L.push(`var<workgroup> sa: array<f16, ${SK * TM * ST}>;`, `var<workgroup> sb: array<f16, ${SK * TN * ST}>;`, `var<workgroup> sc: array<f32, ${TM * TN}>;`);
  L.push(`@compute @workgroup_size(${WG}) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  L.push(`  let m0 = (wid.x / ${N / TN}u) * ${TM}u; let n0 = (wid.x % ${N / TN}u) * ${TN}u;`);
  L.push(`  let sl = lid / ${WG / SK}u; let t = lid % ${WG / SK}u; let sg = t / ${SG}u; let sm = sg % ${SGM}u; let sn = sg / ${SGM}u;`);
  for (let i = 0; i < FM; i++) for (let j = 0; j < FN; j++) L.push(`  var acc${i}_${j} = subgroup_matrix_result<f32, ${cfg.N}, ${cfg.M}>();`);
  for (let q = 0; q < LA; q++) L.push(`  var ra${q}: vec4<f32>;`);
  for (let q = 0; q < LB; q++) L.push(`  var rb${q}: vec4<u32>;`);
  if (BD) for (let kk = 0; kk < TK; kk += cfg.K) for (let j = 0; j < FN; j++) L.push(`  var r${kk}_${j}: subgroup_matrix_right<f16, ${cfg.N}, ${cfg.K}>;`, `  var rn${kk}_${j}: subgroup_matrix_right<f16, ${cfg.N}, ${cfg.K}>;`);
  const kEnd = K; // K a multiple of SK*TK here
  L.push(`  for (var kb = 0u; kb <= ${kEnd}u; kb += ${SK * TK}u) {`);
  L.push(`    if (kb > 0u) {`);
  for (let q = 0; q < LA; q++) {
    L.push(`      { let e = t + ${q * (WG / SK)}u; let r = e / ${TK / 4}u; let k = (e % ${TK / 4}u) * 4u; let o = sl * ${TM * ST}u + r * ${ST}u + k;`);
    L.push(`        sa[o] = f16(ra${q}.x); sa[o + 1u] = f16(ra${q}.y); sa[o + 2u] = f16(ra${q}.z); sa[o + 3u] = f16(ra${q}.w); }`);
  }
  for (let q = 0; q < LB; q++) {
    L.push(`      { let e = t + ${q * (WG / SK)}u; let r = e / ${TK / 8}u; let k = (e % ${TK / 8}u) * 8u; let o = sl * ${TN * ST}u + r * ${ST}u + k;`);
    for (let c = 0; c < 4; c++) L.push(`        { let h = bitcast<vec2<f16>>(rb${q}[${c}]); sb[o + ${2 * c}u] = h.x; sb[o + ${2 * c + 1}u] = h.y; }`);
    L.push(`      }`);
  }
  L.push(`      workgroupBarrier();`, `    }`);
  L.push(`    if (kb < ${K}u) {`);
  for (let q = 0; q < LA; q++) L.push(`      { let e = t + ${q * (WG / SK)}u; ra${q} = a[((m0 + e / ${TK / 4}u) * ${K}u + kb + sl * ${TK}u + (e % ${TK / 4}u) * 4u) / 4u]; }`);
  for (let q = 0; q < LB; q++) L.push(`      { let e = t + ${q * (WG / SK)}u; rb${q} = w[((n0 + e / ${TK / 8}u) * ${K}u + kb + sl * ${TK}u + (e % ${TK / 8}u) * 8u) / 8u]; }`);
  if (BD) for (let kk = 0; kk < TK; kk += cfg.K) for (let j = 0; j < FN; j++) L.push(`      rn${kk}_${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, ${cfg.N}, ${cfg.K}>>(&w, (n0 + sn * ${FN * cfg.N}u + ${j * cfg.N}u) * ${K}u + kb + sl * ${TK}u + ${kk}u, true, ${K}u);`);
  L.push(`    }`);
  L.push(`    if (kb > 0u) {`);
  for (let kk = 0; kk < TK; kk += cfg.K) {
    for (let i = 0; i < FM; i++) L.push(`      let l${kk}_${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, ${cfg.K}, ${cfg.M}>>(&sa, sl * ${TM * ST}u + (sm * ${FM * cfg.M}u + ${i * cfg.M}u) * ${ST}u + ${kk}u, false, ${ST}u);`);
    if (!BD) for (let j = 0; j < FN; j++) L.push(`      let r${kk}_${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, ${cfg.N}, ${cfg.K}>>(&sb, sl * ${TN * ST}u + (sn * ${FN * cfg.N}u + ${j * cfg.N}u) * ${ST}u + ${kk}u, true, ${ST}u);`);
    for (let i = 0; i < FM; i++) for (let j = 0; j < FN; j++) L.push(`      acc${i}_${j} = subgroupMatrixMultiplyAccumulate(l${kk}_${i}, r${kk}_${j}, acc${i}_${j});`);
  }
  L.push(`      workgroupBarrier();`, `    }`);
  if (BD) for (let kk = 0; kk < TK; kk += cfg.K) for (let j = 0; j < FN; j++) L.push(`    r${kk}_${j} = rn${kk}_${j};`);
  L.push(`  }`);
  // slices meet in sc one at a time; each thread keeps its outputs' sums in registers
  const outs = (TM * TN) / WG;
  L.push(`  var s: array<f32, ${outs}>;`);
  for (let s = 0; s < SK; s++) {
    L.push(`  if (sl == ${s}u) {`);
    for (let i = 0; i < FM; i++) for (let j = 0; j < FN; j++) L.push(`    subgroupMatrixStore(&sc, (sm * ${FM * cfg.M}u + ${i * cfg.M}u) * ${TN}u + sn * ${FN * cfg.N}u + ${j * cfg.N}u, acc${i}_${j}, false, ${TN}u);`);
    L.push(`  }`, `  workgroupBarrier();`);
    L.push(`  for (var q = 0u; q < ${outs}u; q++) { s[q] += sc[lid + q * ${WG}u]; }`, `  workgroupBarrier();`);
  }
  L.push(`  for (var q = 0u; q < ${outs}u; q++) { let e = lid + q * ${WG}u; c[(m0 + e / ${TN}u) * ${N}u + n0 + e % ${TN}u] = s[q]; }`);
  L.push('}');
  return { code: L.join('\n'), groups: (M / TM) * (N / TN), WG };
}

function half(x) { // f32 -> f16 bits (round to nearest enough for test data)
  const f = new Float32Array([x]); const u = new Uint32Array(f.buffer)[0];
  const s = (u >>> 16) & 0x8000, e = ((u >>> 23) & 0xff) - 127 + 15, m = (u >>> 13) & 0x3ff;
  return e <= 0 ? s : s | (e << 10) | m;
}
function unhalf(h) { const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1; return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15); }

const SHAPES = [
  ['llama q/k/v 1024->1536', 128, 1536, 1024], ['llama gate/up 1024->5632', 128, 5632, 1024], ['llama down 2816->1024', 128, 1024, 2816],
  ['llama o 1024->1024', 128, 1024, 1024], ['granite down 2048->768', 128, 768, 2048], ['big 4096x4096 M512', 512, 4096, 4096],
];
const PLANS = process.env.PLANS2 ? [
  { TM: 64, TN: 64, TK: 64, SGM: 2, SGN: 2, SK: 1 }, { TM: 32, TN: 64, TK: 64, SGM: 2, SGN: 2, SK: 1 }, { TM: 32, TN: 32, TK: 32, SGM: 1, SGN: 1, SK: 4 },
  { TM: 32, TN: 64, TK: 128, SGM: 2, SGN: 2, SK: 1 }, { TM: 64, TN: 64, TK: 128, SGM: 2, SGN: 2, SK: 1 }, { TM: 32, TN: 32, TK: 64, SGM: 1, SGN: 1, SK: 4 },
  { TM: 64, TN: 64, TK: 64, SGM: 2, SGN: 2, SK: 1, BD: true }, { TM: 32, TN: 64, TK: 64, SGM: 2, SGN: 2, SK: 1, BD: true }, { TM: 32, TN: 64, TK: 32, SGM: 1, SGN: 2, SK: 2, BD: true },
  { TM: 64, TN: 128, TK: 32, SGM: 2, SGN: 4, SK: 1, BD: true }, { TM: 128, TN: 64, TK: 32, SGM: 4, SGN: 2, SK: 1, BD: true }, { TM: 32, TN: 32, TK: 32, SGM: 1, SGN: 1, SK: 4, BD: true },
  { TM: 128, TN: 32, TK: 64, SGM: 4, SGN: 1, SK: 2, BD: true }, { TM: 64, TN: 32, TK: 64, SGM: 2, SGN: 1, SK: 2, BD: true },
] : [
  { TM: 64, TN: 64, TK: 32, SGM: 2, SGN: 2, SK: 1 }, { TM: 32, TN: 64, TK: 32, SGM: 1, SGN: 2, SK: 2 }, { TM: 32, TN: 32, TK: 32, SGM: 2, SGN: 2, SK: 1 },
  { TM: 32, TN: 32, TK: 32, SGM: 1, SGN: 1, SK: 4 }, { TM: 64, TN: 64, TK: 32, SGM: 2, SGN: 2, SK: 2 }, { TM: 128, TN: 64, TK: 32, SGM: 4, SGN: 2, SK: 1 },
  { TM: 64, TN: 128, TK: 32, SGM: 2, SGN: 4, SK: 1 }, { TM: 64, TN: 32, TK: 64, SGM: 2, SGN: 2, SK: 1 }, { TM: 32, TN: 64, TK: 64, SGM: 2, SGN: 2, SK: 1 },
  { TM: 64, TN: 64, TK: 64, SGM: 2, SGN: 2, SK: 1 },
];
const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
const qb = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const qr = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
for (const [name, M, N, K] of SHAPES) {
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const A = Float32Array.from({ length: M * K }, rnd);
  const Wh = Uint16Array.from({ length: N * K }, () => half(rnd() * 0.5));
  const buf = (data, usage) => { const b = device.createBuffer({ size: data.byteLength, usage: usage | GPUBufferUsage.COPY_DST }); device.queue.writeBuffer(b, 0, data); return b; };
  const ab = buf(A, GPUBufferUsage.STORAGE), wb = buf(new Uint32Array(Wh.buffer), GPUBufferUsage.STORAGE);
  const cb = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const rb = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  // reference on a sample of outputs (f16-rounded A, as the kernel stages it)
  const sample = Array.from({ length: 64 }, (_, i) => [(i * 37) % M, (i * 101 + 7) % N]);
  const ref = sample.map(([m, n]) => { let s = 0; for (let k = 0; k < K; k++) s += unhalf(half(A[m * K + k])) * unhalf(Wh[n * K + k]); return s; });
  const line = [];
  for (const p of PLANS) {
    if (M % p.TM || N % p.TN || K % (p.TK * p.SK)) continue;
    const s = shader(M, N, K, p);
    if (!s) continue;
    const tag = `${p.TM}x${p.TN}k${p.TK}s${p.SK}/${p.SGM}x${p.SGN}${p.BD ? 'D' : ''}`;
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: s.code });
    const pipe = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const err = await device.popErrorScope();
    if (err) { line.push(`${tag} ERROR ${err.message.split('\n').slice(0, 3).join(' ')}`); continue; }
    const bg = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [ab, wb, cb].map((b, i) => ({ binding: i, resource: { buffer: b } })) });
    const run = async (reps) => {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
      pass.setPipeline(pipe); pass.setBindGroup(0, bg);
      for (let r = 0; r < reps; r++) pass.dispatchWorkgroups(s.groups);
      pass.end();
      enc.resolveQuerySet(qs, 0, 2, qb, 0); enc.copyBufferToBuffer(qb, 0, qr, 0, 16);
      device.queue.submit([enc.finish()]);
      await qr.mapAsync(GPUMapMode.READ); const t = new BigUint64Array(qr.getMappedRange().slice(0)); qr.unmap();
      return Number(t[1] - t[0]) / 1e3 / reps;
    };
    await run(1);
    const enc = device.createCommandEncoder(); enc.copyBufferToBuffer(cb, 0, rb, 0, M * N * 4); device.queue.submit([enc.finish()]);
    await rb.mapAsync(GPUMapMode.READ); const C = new Float32Array(rb.getMappedRange().slice(0)); rb.unmap();
    const scale = Math.max(...ref.map(Math.abs));
    const diff = Math.max(...sample.map(([m, n], i) => Math.abs(C[m * N + n] - ref[i]))) / scale;
    await run(200);
    const us = Math.min(await run(200), await run(200));
    line.push(`${tag} ${us.toFixed(1)} us ${((2 * M * N * K) / us / 1e6).toFixed(1)} TFLOPS wg ${s.groups}x${s.WG} rel ${diff.toExponential(1)}`);
  }
  console.log(`${name} [${M}x${K}]x[${K}x${N}]: ${line.join(' | ')}`);
}
if (process.env.DUMP) console.log(shader(128, 1536, 1024, PLANS[Number(process.env.DUMP)] ?? PLANS[0]).code);
if (process.env.PLAIN) {
  const plain = await create(['enable-dawn-features=vulkan_enable_f16_on_nvidia']).requestAdapter();
  console.log('without allow_unsafe_apis: subgroup matrix', plain.features.has('chromium-experimental-subgroup-matrix'));
}
