// The graph IR: one node type for every traced value, shared by the DSL, the passes and both backends.

export type DType = 'f32' | 'i32' | 'u32' | 'bool';
/**
 * How a weight is stored on the device; values are always computed in f32. q8 / q4: 32-element blocks of 8- or
 * 4-bit values with f16 block constants (layout and decoders in compiler/quantized.ts), decoded where they are read.
 */
export type StorageDType = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4';

/** Rows [rowStart, rowStart + rows) of checkpoint tensor `of`: a weight split to fit the binding limit. */
export interface WeightPiece {
  of: string;
  rowStart: number;
  rows: number;
  /** Rows of the whole tensor. */
  totalRows: number;
}

/** Attributes of every op. The op table in ops.ts is keyed by this interface, so a new op is a compile error until it has a full definition. */
export interface OpAttrs {
  // sources
  input: { name: string };
  /** `piece`: this buffer holds rows of a larger checkpoint tensor (see passes/splitWeights). */
  weight: { name: string; storage: StorageDType; piece?: WeightPiece };
  state: { name: string };
  const: { value: number };
  iota: { axis: number };
  // elementwise unary
  neg: {}; abs: {}; exp: {}; log: {}; sqrt: {}; rsqrt: {}; sin: {}; cos: {};
  sigmoid: {}; silu: {}; softplus: {}; tanh: {}; gelu: {}; gelu_tanh: {}; floor: {};
  cast: { to: DType };
  // elementwise binary
  add: {}; sub: {}; mul: {}; div: {}; mod: {}; pow: {}; max: {}; min: {};
  lt: {}; le: {}; gt: {}; ge: {}; eq: {}; ne: {}; and: {}; or: {};
  // integer bit ops (i32, u32): what on-device RNGs and hashes are made of
  xor: {}; shl: {}; shr: {};
  // ternary
  where: {};
  // reductions over the last axis
  sum: {}; rmax: {}; mean: {};
  // [..., M, K] x [..., K, N] -> [..., M, N]
  matmul: {};
  // views
  reshape: { shape: number[] };
  permute: { perm: number[] };
  broadcast: { shape: number[] };
  slice: { starts: number[]; ends: number[]; steps: number[] };
  concat: { axis: number };
  // indexing
  gather: {};
  scatter: {};
  // cumulative sum over the last axis
  cumsum: {};
  // fused masked attention (see dsl/nn/attention.ts for its composition): q [..., M, D], kT [..., D, E],
  // v [..., E, Dv], mask [..., M, E] bool, limit [..., M] i32 (keys at or past it are masked) -> [..., M, Dv];
  // with `weights`, [..., M, Dv + E]: each row's output, then its softmax probability of every key (0: masked)
  attention: { scale: number; softcap: number; weights?: true };
  // attention over `splits` slices of the keys (compiler/attentionSplit.ts, flash-decoding): the same inputs ->
  // [..., M, splits, Dv + 2], each slice's score maximum, its sum of exponentials and its unnormalised output
  attention_split: { scale: number; softcap: number; splits: number };
  // one decode step of a Mamba-2 mixer (compiler/ssdStep.ts): causal conv over a ring of the last K inputs, dt,
  // the SSM state update and its read-out; `part` says which of its three results the node is (y, the new SSM
  // state, the new conv ring), so the state writes are ordinary scatters of the last two
  ssd_step: { part: 'y' | 'ssm' | 'conv'; dtMin: number; dtMax: number };
  // one decode step of a Mamba-1 mixer after its conv and x_proj (compiler/selectiveStep.ts): dt_proj + softplus,
  // the SSM state update and its gated read-out; `part` says which result the node is (y or the new SSM state)
  selective_step: { part: 'y' | 'ssm'; eps: number };
  // the Mamba-1 selective scan over T > 1 tokens (compiler/selectiveScan.ts): the recurrence token by token, y or
  // the final SSM state by `part`; chunkSize is its composition's (the unfused fallback's) chunk length
  selective_scan: { part: 'y' | 'ssm'; chunkSize: number };
  // a matmul [1, I] x [I, N] whose left operand is an elementwise function of decode matvecs over one row
  // (a gated MLP's activation: passes/fuseMlp.ts), computed by one kernel (lower/mlpKernel.ts) that adds its
  // workgroups' partial sums as fixed point with integer atomics; readers decode its buffer (three i32 words an
  // element, FIXED_WORDS)
  fused_mlp: {};
}

export type OpName = keyof OpAttrs;

export interface Node<K extends OpName = OpName> {
  readonly id: number;
  readonly op: K;
  readonly inputs: Node[];
  readonly attrs: OpAttrs[K];
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** A traced program: its nodes in creation (topological) order and its named roots. */
export interface Graph {
  nodes: Node[];
  /** Named values the caller reads (or that later programs read): materialised into output buffers. */
  outputs: Map<string, Node>;
  /** Final version of every state written by the program (scatter chains), by state name. */
  stateWrites: Map<string, Node<'scatter'>>;
  /** Declared shapes of inputs, states and weights, by name. */
  inputs: Map<string, Node<'input'>>;
  states: Map<string, Node<'state'>>;
  weights: Map<string, Node<'weight'>>;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function fmtShape(shape: readonly number[]): string {
  return `(${shape.join(',')})`;
}

export function isSource(n: Node): boolean {
  return n.op === 'input' || n.op === 'weight' || n.op === 'state' || n.op === 'const';
}

/** Follows a chain of scatters back to the state it writes. */
export function stateRoot(n: Node): Node<'state'> | undefined {
  let cur: Node = n;
  while (cur.op === 'scatter') cur = cur.inputs[0]!;
  return cur.op === 'state' ? (cur as Node<'state'>) : undefined;
}

/** Text form of a graph, one node a line: `%5 = matmul(%3, %4) : f32(1,64)`. */
export function printGraph(g: Graph): string {
  const lines: string[] = [];
  const names = new Map<number, string>();
  for (const [name, n] of g.outputs) names.set(n.id, name);
  for (const n of g.nodes) {
    const args = n.inputs.map((i) => `%${i.id}`).join(', ');
    const attrs = Object.keys(n.attrs).length ? ' ' + JSON.stringify(n.attrs) : '';
    const out = names.has(n.id) ? `  -> ${names.get(n.id)}` : '';
    lines.push(`%${n.id} = ${n.op}(${args})${attrs} : ${n.dtype}${fmtShape(n.shape)}${out}`);
  }
  return lines.join('\n');
}
