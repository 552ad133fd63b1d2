// The CPU reference backend: evaluates a graph node by node with the op table's reference semantics.
// It defines what every program means; GPU results are tested against it.
import { type Graph, type Node, numel, stridesOf } from '../compiler/ir.ts';
import { numberIndex, delinearize, linearize } from '../compiler/indexAlgebra.ts';
import { OPS } from '../compiler/ops.ts';
import { type NDArray, allocArray } from './ndarray.ts';

export interface CpuRunArgs {
  inputs?: Record<string, NDArray>;
  weights?: Record<string, NDArray>;
  /** Mutated: every state written by the program is replaced by its new value. */
  states?: Record<string, NDArray>;
}

function need<T>(map: Record<string, T> | undefined, name: string, what: string): T {
  const v = map?.[name];
  if (!v) throw new Error(`cpu backend: missing ${what} '${name}'`);
  return v;
}

function checkShape(n: Node, v: NDArray, what: string): NDArray {
  if (v.shape.join() !== n.shape.join()) throw new Error(`cpu backend: ${what} has shape (${v.shape.join(',')}), expected (${n.shape.join(',')})`);
  return v;
}

export function evalNode(n: Node, args: readonly NDArray[], ctx: CpuRunArgs): NDArray {
  const size = numel(n.shape);
  const out = allocArray(n.dtype, size);
  const result: NDArray = { shape: [...n.shape], dtype: n.dtype, data: out };
  const def = OPS[n.op];
  switch (n.op) {
    case 'input': return checkShape(n, need(ctx.inputs, (n as Node<'input'>).attrs.name, 'input'), `input '${(n as Node<'input'>).attrs.name}'`);
    case 'weight': return checkShape(n, need(ctx.weights, (n as Node<'weight'>).attrs.name, 'weight'), `weight '${(n as Node<'weight'>).attrs.name}'`);
    case 'state': return checkShape(n, need(ctx.states, (n as Node<'state'>).attrs.name, 'state'), `state '${(n as Node<'state'>).attrs.name}'`);
    case 'const': out[0] = (n as Node<'const'>).attrs.value; return result;
    case 'iota': {
      const axis = (n as Node<'iota'>).attrs.axis;
      const strides = stridesOf(n.shape);
      for (let i = 0; i < size; i++) out[i] = Math.floor(i / strides[axis]!) % n.shape[axis]!;
      return result;
    }
    case 'gather': {
      const [table, idx] = args as [NDArray, NDArray];
      const row = numel(table.shape.slice(1));
      for (let i = 0; i < idx.data.length; i++) {
        // out-of-range rows read the last row, as WebGPU's robust buffer access clamps
        const r = idx.data[i]! < 0 || idx.data[i]! >= table.shape[0]! ? table.shape[0]! - 1 : idx.data[i]!;
        out.set(table.data.subarray(r * row, (r + 1) * row), i * row);
      }
      return result;
    }
    case 'scatter': {
      const [target, idx, values] = args as [NDArray, NDArray, NDArray];
      out.set(target.data);
      const row = numel(target.shape.slice(1));
      for (let i = 0; i < idx.data.length; i++) {
        const r = idx.data[i]!;
        if (r < 0 || r >= target.shape[0]!) continue; // out-of-range rows are dropped, as on the GPU
        out.set(values.data.subarray(i * row, (i + 1) * row), r * row);
      }
      return result;
    }
    case 'cumsum': {
      const x = args[0]!;
      const len = n.shape[n.shape.length - 1]!;
      for (let base = 0; base < size; base += len) {
        let acc = 0;
        for (let k = 0; k < len; k++) out[base + k] = acc += x.data[base + k]!;
      }
      return result;
    }
    case 'attention': {
      // the composition softmax(where(mask, softcap(scale * q kT), -inf)) v, row by row
      const [q, kT, v, mask, limit] = args as [NDArray, NDArray, NDArray, NDArray, NDArray];
      const { scale, softcap } = (n as Node<'attention'>).attrs;
      const r = n.shape.length;
      const [M, Dv] = [n.shape[r - 2]!, n.shape[r - 1]!];
      const D = q.shape[r - 1]!;
      const E = kT.shape[r - 1]!;
      const batches = size / (M * Dv);
      const scores = new Float64Array(E);
      for (let b = 0; b < batches; b++)
        for (let m = 0; m < M; m++) {
          let max = -Infinity;
          for (let c = 0; c < E; c++) {
            // keys at or past the row's limit are masked, as in the kernel (which stops there)
            if (!mask.data[(b * M + m) * E + c] || c >= limit.data[b * M + m]!) { scores[c] = -Infinity; continue; }
            let s = 0;
            for (let d = 0; d < D; d++) s += q.data[(b * M + m) * D + d]! * kT.data[(b * D + d) * E + c]!;
            s *= scale;
            if (softcap) s = Math.tanh(s / softcap) * softcap;
            scores[c] = s;
            max = Math.max(max, s);
          }
          let sum = 0;
          for (let c = 0; c < E; c++) sum += scores[c] = max === -Infinity ? 0 : Math.exp(scores[c]! - max);
          for (let dv = 0; dv < Dv; dv++) {
            let acc = 0;
            for (let c = 0; c < E; c++) if (scores[c]) acc += scores[c]! * v.data[(b * E + c) * Dv + dv]!;
            out[(b * M + m) * Dv + dv] = sum ? acc / sum : 0;
          }
        }
      return result;
    }
    case 'matmul': {
      const [a, b] = args as [NDArray, NDArray];
      const r = n.shape.length;
      const [m, nn] = [n.shape[r - 2]!, n.shape[r - 1]!];
      const k = a.shape[r - 1]!;
      const batches = size / (m * nn);
      for (let bt = 0; bt < batches; bt++)
        for (let i = 0; i < m; i++)
          for (let j = 0; j < nn; j++) {
            let acc = 0;
            for (let p = 0; p < k; p++) acc += a.data[bt * m * k + i * k + p]! * b.data[bt * k * nn + p * nn + j]!;
            out[bt * m * nn + i * nn + j] = acc;
          }
      return result;
    }
  }
  switch (def.kind) {
    case 'elementwise': {
      const vals = new Array<number>(args.length);
      for (let i = 0; i < size; i++) {
        for (let a = 0; a < args.length; a++) vals[a] = args[a]!.data[i]!;
        out[i] = def.cpu(vals, n.attrs as never, n.inputs);
      }
      return result;
    }
    case 'view': {
      for (let i = 0; i < size; i++) {
        const outIdx = delinearize(numberIndex, i, n.shape);
        const cands = def.index(numberIndex, outIdx, n.attrs as never, n.inputs, n);
        // concat: the candidate whose index is within its input; other views have one candidate
        const pick = cands.find((c) => c.index.every((v, d) => v >= 0 && v < n.inputs[c.input]!.shape[d]!)) ?? cands[0]!;
        out[i] = args[pick.input]!.data[linearize(numberIndex, pick.index, n.inputs[pick.input]!.shape)]!;
      }
      return result;
    }
    case 'reduce': {
      const x = args[0]!;
      const len = x.shape[x.shape.length - 1]!;
      for (let o = 0; o < size; o++) {
        let acc = def.identity;
        for (let k = 0; k < len; k++) acc = def.combine.cpu(acc, x.data[o * len + k]!);
        out[o] = def.finish ? def.finish.cpu(acc, len) : acc;
      }
      return result;
    }
    default:
      throw new Error(`cpu backend: no evaluation for op ${n.op}`);
  }
}

/** Runs a whole graph on the CPU. Returns the named outputs; updates `states` with every state the graph writes. */
export function runCpu(graph: Graph, args: CpuRunArgs): Record<string, NDArray> {
  const values = new Map<number, NDArray>();
  for (const n of graph.nodes) values.set(n.id, evalNode(n, n.inputs.map((i) => values.get(i.id)!), args));
  const outputs: Record<string, NDArray> = {};
  for (const [name, n] of graph.outputs) outputs[name] = values.get(n.id)!;
  for (const [name, n] of graph.stateWrites) if (args.states) args.states[name] = values.get(n.id)!;
  return outputs;
}
