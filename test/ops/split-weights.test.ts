// Weights larger than the binding limit: the compiler splits them into row pieces (compiler/passes/splitWeights)
// and the products that read them; the GPU result must equal the CPU reference of the unsplit graph.
import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.ts';
import { planPieces } from '../../compiler/passes/splitWeights.ts';
import { input, trace, weight } from '../../dsl/trace.ts';
import { expectClose, randomData, runGraphBoth } from '../helpers/gpu.ts';

const VOCAB = 101; // prime: pieces of unequal size
const HIDDEN = 8;

/** An embedding gather and a tied LM head over the same table, the shape of Granite's 100,352 x 768. */
function tiedEmbedding(storage: 'f32' | 'bf16') {
  return trace(() => {
    const table = weight('embed', [VOCAB, HIDDEN], storage);
    const ids = input('ids', [3], 'i32');
    const h = table.gather(ids).mul(input('scale', [3, HIDDEN]));
    return { logits: h.reshape(1, 3, HIDDEN).matmul(table.T) };
  });
}

describe('planPieces', () => {
  it('cuts rows into equal pieces that fit, 16-bit pieces on whole words', () => {
    expect(planPieces('w', [10, 3], 'f32', 48)).toEqual([
      { of: 'w', rowStart: 0, rows: 4, totalRows: 10 },
      { of: 'w', rowStart: 4, rows: 4, totalRows: 10 },
      { of: 'w', rowStart: 8, rows: 2, totalRows: 10 },
    ]);
    // an odd row of 3 halves: pieces hold an even number of rows so each starts on a u32
    expect(planPieces('w', [10, 3], 'bf16', 18).map((p) => p.rows)).toEqual([2, 2, 2, 2, 2]);
    expect(() => planPieces('w', [4, 100], 'f32', 64)).toThrow(/weight 'w' \[4,100\]: one row needs 400 bytes, more than the 64/);
  });
});

describe('weights over the binding limit', () => {
  for (const storage of ['f32', 'bf16'] as const) {
    it(`${storage}: a tied embedding in pieces gives the unsplit CPU result`, async () => {
      const graph = tiedEmbedding(storage);
      const limit = 1280; // 40 rows of f32 (3 pieces), 80 of bf16 (2 pieces)
      const res = await runGraphBoth(graph, (g) => randomData(g, 3, { lo: -1, hi: 1, intHi: VOCAB }), { limits: { maxStorageBufferBindingSize: limit } });
      const pieces = Object.values(res.program.weights).map((id) => res.program.buffers[id]!);
      expect(pieces.length).toBe(planPieces('embed', [VOCAB, HIDDEN], storage, limit).length);
      for (const b of pieces) {
        expect(b.bytes).toBeLessThanOrEqual(limit);
        expect(b.piece?.of).toBe('embed');
      }
      // one product per piece (kernels may share a dispatch), none through the concat of all pieces
      const products = res.program.kernels.reduce((sum, k) => sum + Number(/matmul(?:\*(\d+))?/.exec(k.ops)?.[1] ?? (k.ops.includes('matmul') ? 1 : 0)), 0);
      expect(products).toBe(pieces.length);
      expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-5, rtol: 1e-4 });
    });
  }

  it('a weight split along the reduction axis becomes a sum of products', async () => {
    const graph = trace(() => ({ y: input('x', [2, 97]).matmul(weight('w', [97, 5])) }));
    const res = await runGraphBoth(graph, (g) => randomData(g, 5, { lo: -1, hi: 1 }), { limits: { maxStorageBufferBindingSize: 800 } });
    expect(Object.keys(res.program.weights).length).toBe(3);
    expectClose(res.gpu.outputs, res.cpu.outputs, { atol: 1e-5, rtol: 1e-4 });
  });

  it('a single row over the limit is refused naming the weight', () => {
    const graph = trace(() => ({ y: input('x', [1, 64]).matmul(weight('wide', [2, 64]).T) }));
    expect(() => compile(graph, { limits: { maxStorageBufferBindingSize: 128 } })).toThrow(/weight 'wide' \[2,64\]: one row needs 256 bytes/);
  });
});
