// Trace-time shape errors, in the user's terms: each names the op, the shapes involved and the rule broken.
// The messages are matched whole, so a vaguer rewording fails here.
import { describe, expect, it } from 'vitest';
import { ShapeError } from '../../compiler/ops.ts';
import { Tensor } from '../../dsl/tensor.ts';
import { type Dims, input, iota, state, trace, weight } from '../../dsl/trace.ts';

/** Traces `fn` and expects a ShapeError with exactly `message`. */
function expectShapeError(fn: () => unknown, message: string, dims: Dims = {}): void {
  let thrown: unknown;
  try {
    trace(() => void fn(), dims);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'a ShapeError at trace time').toBeInstanceOf(ShapeError);
  expect((thrown as Error).message).toBe(message);
}

describe('matmul', () => {
  it('names both shapes and the inner dims that differ', () => {
    expectShapeError(() => input('a', [2, 3]).matmul(input('b', [4, 5])), '[matmul] lhs (2,3): inner dim 3 != rhs (4,5) dim 4');
  });
  it('a transposed operand reports its transposed shape', () => {
    expectShapeError(() => input('x', [2, 3]).matmul(input('w', [5, 4]).T), '[matmul] lhs (2,3): inner dim 3 != rhs (4,5) dim 4');
  });
  it('needs rank 2 on both sides', () => {
    expectShapeError(() => input('a', [3]).matmul(input('b', [3, 4])), '[matmul] lhs (3) and rhs (3,4): both need rank >= 2');
  });
  it('batch dims must broadcast', () => {
    expectShapeError(() => input('a', [2, 3, 4]).matmul(input('b', [5, 4, 6])), '[matmul] cannot broadcast (2) with (5): dim 0 is 2 vs 5');
  });
});

describe('broadcasting and dtypes', () => {
  it('elementwise operands that do not broadcast', () => {
    expectShapeError(() => input('a', [2, 3]).add(input('b', [4, 3])), '[add] cannot broadcast (2,3) with (4,3): dim 0 is 2 vs 4');
  });
  it('trailing dims are aligned first', () => {
    expectShapeError(() => input('a', [5, 7]).mul(input('b', [5])), '[mul] cannot broadcast (5,7) with (5): dim 1 is 7 vs 5');
  });
  it('broadcastTo a shape whose dims are neither 1 nor equal', () => {
    expectShapeError(() => input('a', [2, 3]).broadcastTo([4, 3]), '[broadcast] (2,3) to (4,3): each dim must be 1 or equal');
  });
  it('dtypes must match', () => {
    expectShapeError(() => input('a', [3]).add(input('i', [3], 'i32')), '[add] input 0 is f32 but input 1 is i32: dtypes must match (cast first)');
  });
  it('no arithmetic on bool', () => {
    expectShapeError(() => input('p', [3], 'bool').add(input('q', [3], 'bool')), '[add] needs numeric inputs (f32, i32, u32), got bool (cast first)');
  });
  it('where needs a bool condition', () => {
    expectShapeError(() => Tensor.where(input('c', [3]), 1, 0), '[where] condition must be bool, got f32');
  });
});

describe('views', () => {
  it('reshape to a different element count', () => {
    expectShapeError(() => input('x', [2, 3]).reshape(4, 2), '[reshape] (2,3) to (4,2): element counts 6 != 8');
  });
  it('reshape with -1 that does not divide', () => {
    expectShapeError(() => input('x', [2, 3]).reshape(4, -1), '[reshape] (2,3) to (4,-1): 6 elements do not divide by 4');
  });
  it('reshape to negative dims', () => {
    expectShapeError(() => input('x', [2, 3]).reshape(-2, -3), '[reshape] (2,3) to (-2,-3): dims must be positive integers');
  });
  it('permute by something that is not a permutation', () => {
    expectShapeError(() => input('x', [2, 3, 4]).permute(0, 0, 1), '[permute] (2,3,4) by [0,0,1]: not a permutation of 3 axes');
    expectShapeError(() => input('x', [2, 3, 4]).permute(1, 0), '[permute] (2,3,4) by [1,0]: not a permutation of 3 axes');
  });
  it('permute and transpose axes out of range', () => {
    expectShapeError(() => input('x', [2, 3]).permute(0, 2), '[permute] axis 2 out of range for rank 2');
    expectShapeError(() => input('x', [2, 3]).transpose(0, 2), '[transpose] axis 2 out of range for rank 2');
  });
  it('slice past the end, empty or with step 0', () => {
    expectShapeError(() => input('x', [2, 3]).slice(1, 2, 10), '[slice] (2,3) axis 1: range 2:10:1 is not within 0:3');
    expectShapeError(() => input('x', [2, 3]).slice(0, 1, 1), '[slice] (2,3) axis 0: range 1:1:1 is not within 0:2');
    expectShapeError(() => input('x', [2, 3]).slice(1, 0, 2, 0), '[slice] (2,3) axis 1: range 0:2:0 is not within 0:3');
  });
  it('split sizes that do not add up', () => {
    expectShapeError(() => input('x', [2, 3]).split(1, [1, 1]), '[split] (2,3) axis 1: sizes [1,1] sum to 2, not 3');
  });
  it('squeeze of an axis that is not 1, unsqueeze past the end', () => {
    expectShapeError(() => input('x', [2, 3]).squeeze(1), '[squeeze] (2,3) axis 1 has size 3, not 1');
    expectShapeError(() => input('x', [2, 3]).unsqueeze(5), '[unsqueeze] axis 5 out of range for rank 2 (a new axis goes at 0..2)');
  });
  it('concat of parts whose other dims differ', () => {
    expectShapeError(() => Tensor.concat([input('a', [2, 3]), input('b', [3, 4])], 1), '[concat] input 0 (2,3) and input 1 (3,4): dims other than axis 1 must match');
  });
});

describe('reductions and scans', () => {
  it('axis out of range', () => {
    expectShapeError(() => input('x', [2, 3]).sum(2), '[sum] axis 2 out of range for rank 2');
    expectShapeError(() => input('x', [2, 3]).cumsum(-3), '[cumsum] axis -3 out of range for rank 2');
  });
  it('mean of integers', () => {
    expectShapeError(() => input('i', [2, 3], 'i32').mean(), '[mean] needs f32 input, got i32');
  });
});

describe('indexing', () => {
  it('gather needs integer indices', () => {
    expectShapeError(() => weight('emb', [10, 4]).gather(input('ids', [3])), '[gather] indices must be i32 or u32, got f32');
  });
  it('scatter values must be indices shape then the row shape', () => {
    expectShapeError(
      () => state('cache', [13, 7]).scatter(input('idx', [5], 'i32'), input('vals', [5, 8])),
      '[scatter] target (13,7) at indices (5): values (5,8) must be (5,7)',
    );
  });
  it('scatter only into a state', () => {
    expectShapeError(() => input('x', [4, 2]).scatter(input('idx', [1], 'i32'), input('v', [1, 2])), '[scatter] target must be a state (declared with state(...)), got input');
  });
});

describe('declarations', () => {
  it('an unbound symbolic dim names the tensor and the bound dims', () => {
    expectShapeError(() => input('x', ['T', 4]), "input 'x': dim 'T' is not bound by this trace (bound: none)");
    expectShapeError(() => input('x', ['T', 'D']), "input 'x': dim 'D' is not bound by this trace (bound: T)", { T: 3 });
  });
  it('a bound symbolic dim resolves', () => {
    const g = trace(() => ({ y: input('x', ['T', 4]).sum() }), { T: 3 });
    expect(g.inputs.get('x')!.shape).toEqual([3, 4]);
  });
  it('non-integer and zero dims', () => {
    expectShapeError(() => input('x', [2.5, 3]), "input 'x': dim 2.5 must be a positive integer");
    expectShapeError(() => weight('w', [0, 3]), "weight 'w': dim 0 must be a positive integer");
  });
  it('a weight or state declared twice with different shapes', () => {
    expectShapeError(() => (weight('w', [2, 3]), weight('w', [3, 2])), "weight 'w' declared as (2,3) and again as (3,2)");
    expectShapeError(() => (state('s', [4]), state('s', [4], 'i32')), "state 's' declared as f32(4) and again as i32(4)");
  });
  it('iota axis out of range', () => {
    expectShapeError(() => iota([2, 3], 2), '[iota] axis 2 out of range for shape (2,3)');
  });
  it('tensor ops outside a trace say so', () => {
    expect(() => input('x', [1])).toThrow('Tensor operations must run inside trace(...)');
  });
});
