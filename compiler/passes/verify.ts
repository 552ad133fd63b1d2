// verify: structural checks of a graph, run before and between passes (in tests) so a broken pass fails loudly.
import { type Graph, fmtShape, stateRoot } from '../ir.ts';
import { OPS } from '../ops.ts';

export class VerifyError extends Error {
  override name = 'VerifyError';
}

export function verify(g: Graph): void {
  const seen = new Set<number>();
  const written = new Map<number, number>(); // node id of a state version -> the scatter that overwrote it
  for (const n of g.nodes) {
    for (const i of n.inputs) if (!seen.has(i.id)) throw new VerifyError(`%${n.id} (${n.op}) uses %${i.id} before it is defined`);
    seen.add(n.id);
    if (OPS[n.op].kind !== 'source' && n.op !== 'iota') {
      const { shape, dtype } = OPS[n.op].infer(n.inputs, n.attrs as never);
      if (shape.join() !== n.shape.join() || dtype !== n.dtype)
        throw new VerifyError(`%${n.id} (${n.op}) is ${n.dtype}${fmtShape(n.shape)} but its rule gives ${dtype}${fmtShape(shape)}`);
    }
    if (n.op === 'scatter') {
      const target = n.inputs[0]!;
      if (!stateRoot(target)) throw new VerifyError(`%${n.id} scatter target %${target.id} is not a state`);
      const prev = written.get(target.id);
      if (prev !== undefined) throw new VerifyError(`%${n.id} and %${prev} both overwrite state version %${target.id}: writes must form a chain`);
      written.set(target.id, n.id);
    }
  }
  for (const [name, n] of g.outputs) if (!seen.has(n.id)) throw new VerifyError(`output '${name}' is not in the graph`);
  for (const [name, n] of g.stateWrites) {
    const root = stateRoot(n);
    if (!root || root.attrs.name !== name) throw new VerifyError(`state write '${name}' does not end a scatter chain on that state`);
  }
}
