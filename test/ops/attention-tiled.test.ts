// The tiled (prefill) attention template against the CPU reference of the attention op, on sizes that leave
// partial tiles: query rows not a multiple of the row tile, keys not a multiple of the key tile, several KV heads
// (GQA folded into the rows as the models do), sliding windows, empty rows, softcap, Dv != D, and the smaller
// tile shapes a tighter workgroup-memory limit or a head dimension of 256 selects; with `unroll` (the GPU's) the
// staging written out trip by trip where the tile divides by the threads, the value tile loaded with the key tile.
import { expect, test } from 'vitest';
import { input, iota, output } from '../../dsl/trace.ts';
import { attention } from '../../dsl/nn/attention.ts';
import { tilesOf } from '../../compiler/lower/attentionPrefillKernel.ts';
import { closeness, runBoth } from '../helpers/gpu.ts';
import { mulberry32 } from '../../base/random.ts';

// H KV heads, M query rows per head (G query heads x T tokens), E keys, D and Dv head sizes, W a sliding window
// (0: none), storage the workgroup-memory limit, tile the rows x keys of the tile shape it must select.
interface Case { H: number; M: number; E: number; D: number; Dv: number; W: number; softcap: number; storage: number; tile: string; unroll?: boolean; chosen?: [rows: number, keys: number] }
const CASES: Case[] = [
  { H: 2, M: 38, E: 45, D: 16, Dv: 24, W: 0, softcap: 0, storage: 8192, tile: '16x32' },
  { H: 1, M: 21, E: 70, D: 20, Dv: 20, W: 9, softcap: 5, storage: 32768, tile: '16x64' },
  { H: 1, M: 17, E: 30, D: 40, Dv: 36, W: 0, softcap: 0, storage: 4096, tile: '8x8' },
  { H: 1, M: 16, E: 19, D: 256, Dv: 256, W: 4, softcap: 0, storage: 16384, tile: '4x8' },
  { H: 2, M: 38, E: 45, D: 16, Dv: 24, W: 0, softcap: 0, storage: 8192, tile: '16x32', unroll: true },
  // llama's head size on the H200's 32 KiB: 8 trips for the query tile, 32 for a key or value tile
  { H: 2, M: 40, E: 100, D: 64, Dv: 64, W: 0, softcap: 2, storage: 32768, tile: '16x64', unroll: true },
  // a chosen tile (DeviceLimits.attentionTiles, STRATA_ATTN_TILES) where it fits, else the largest that does
  { H: 2, M: 40, E: 100, D: 64, Dv: 64, W: 0, softcap: 0, storage: 32768, tile: '8x32', unroll: true, chosen: [8, 32] },
  { H: 2, M: 40, E: 100, D: 64, Dv: 64, W: 0, softcap: 0, storage: 32768, tile: '16x64', chosen: [32, 64] },
];

function build({ H, M, E, D, Dv, W, softcap }: Case) {
  const q = input('q', [H, M, D]);
  const kT = input('kT', [H, D, E]);
  const v = input('v', [H, E, Dv]);
  // each row's position: it sees keys at or before it (and, with a window, fewer than W back); -1 sees none
  const pos = input('pos', [H, M], 'i32');
  const key = iota([H, M, E], 2, 'i32');
  const at = pos.reshape(H, M, 1);
  let mask = key.le(at);
  if (W) mask = mask.and(key.gt(at.sub(W)));
  output('out', attention(q, kT, v, mask, pos.add(1), { scale: 0.3, softcap }));
}

function data({ H, M, E, D, Dv }: Case) {
  const rand = mulberry32(7);
  const r = (n: number) => Array.from({ length: n }, () => rand() * 2 - 1);
  // positions run up the rows like a prompt's tokens (two query heads per KV head), with an empty row and one past E
  const pos = Array.from({ length: H * M }, (_, i) => (i % M === 3 ? -1 : i % M === 5 ? E + 4 : Math.min(E - 1, (i % M) % Math.ceil(M / 2) + (i % 3))));
  return { inputs: { q: r(H * M * D), kT: r(H * D * E), v: r(H * E * Dv), pos } };
}

// f32 on both sides; the online softmax sums in another order than the reference: 1e-5, as for the one-row kernel.
test.each(CASES.map((c, i) => [i, c.tile, c] as const))('tiled attention matches the reference (case %d, tile %s)', async (_i, tile, c) => {
  const both = await runBoth(() => build(c), {}, data(c), { limits: { maxComputeWorkgroupStorageSize: c.storage, unroll: c.unroll ?? false, ...(c.chosen ? { attentionTiles: tilesOf(...c.chosen) } : {}) } });
  const kernels = both.program.kernels.filter((k) => k.name.includes('attention'));
  expect(kernels).toHaveLength(1);
  const [rows, keys] = tile.split('x').map(Number) as [number, number];
  // the tiled template: one workgroup per tile of rows and KV head, the key tile staged in workgroup memory
  expect(kernels[0]!.wgsl).toMatch(/var<workgroup> att_kv/);
  expect(kernels[0]!.wgsl).toContain(`t0 += ${keys}u`);
  // written out, each staged element is held in a `let st` until the tile's stores; as loops, none is
  expect(/let st\d+: f32/.test(kernels[0]!.wgsl)).toBe(c.unroll ?? false);
  expect(kernels[0]!.workgroups[0] * kernels[0]!.workgroups[1] * kernels[0]!.workgroups[2]).toBe(c.H * Math.ceil(c.M / rows));
  expect(closeness(both.gpu.outputs.out!, both.cpu.outputs.out!, { atol: 1e-5, rtol: 1e-4 })).toBeUndefined();
});
