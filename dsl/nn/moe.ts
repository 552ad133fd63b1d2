// Mixture-of-experts FFN (hybrid-architectures.md §5.6 Jamba, §7.6 GraniteMoeHybrid, §11.6 Qwen3-Next): router,
// top-k as a composition of reductions, and the experts evaluated densely or through gathered weights.
import { ShapeError } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { iota } from '../trace.ts';
import { activate, linear, softmax } from './basic.ts';

/**
 * The k largest entries of each row of scores [N,E]: k rounds of (row max, first index attaining it, mask it out).
 * Ties go to the lower expert index, as torch.topk does on CPU. -> values [N,k], indices [N,k] i32, and
 * `selected` [N,E] bool. Each round is two length-E reductions, so k stays small (<= 16 in practice).
 */
export function topK(scores: Tensor, k: number): { values: Tensor; indices: Tensor; selected: Tensor } {
  const [N, E] = scores.shape as [number, number];
  if (k < 1 || k > E) throw new ShapeError(`[topK] k=${k} must be in 1..${E} for scores (${N},${E})`);
  const expert = iota([N, E], 1);
  let remaining = scores;
  let selected: Tensor | undefined;
  const values: Tensor[] = [];
  const indices: Tensor[] = [];
  for (let round = 0; round < k; round++) {
    const best = remaining.max(-1, true); // [N,1]
    // first index attaining the max: the largest (E-1-e) among the maxima
    const index = Tensor.where(remaining.eq(best), expert.neg().add(E - 1), -1).max(-1, true).neg().add(E - 1); // [N,1] i32
    const hit = expert.eq(index); // [N,E]
    selected = selected ? selected.or(hit) : hit;
    remaining = Tensor.where(hit, -Infinity, remaining);
    values.push(best);
    indices.push(index);
  }
  return { values: Tensor.concat(values, 1), indices: Tensor.concat(indices, 1), selected: selected! };
}

export type RoutingMode =
  /** Jamba, Qwen3-Next: softmax over all experts, then top-k of the probabilities (renormalised if normTopkProb). */
  | 'softmax-then-topk'
  /** GraniteMoeHybrid: top-k of the raw logits, softmax over the k chosen. */
  | 'topk-then-softmax';

/**
 * Routing weights [N,k] and expert indices [N,k] from router logits [N,E] (f32, as HF computes them).
 * Also the dense form [N,E]: each token's weight for every expert, zero where unselected.
 */
export function route(logits: Tensor, topk: number, mode: RoutingMode, normTopkProb = false): { weights: Tensor; indices: Tensor; dense: Tensor } {
  if (mode === 'softmax-then-topk') {
    const probs = softmax(logits);
    const top = topK(probs, topk);
    const sum = top.values.sum(-1, true);
    const weights = normTopkProb ? top.values.div(sum) : top.values;
    const dense = Tensor.where(top.selected, normTopkProb ? probs.div(sum) : probs, 0);
    return { weights, indices: top.indices, dense };
  }
  const top = topK(logits, topk);
  const weights = softmax(top.values);
  // softmax over the selected logits only: the others get exp(-inf) = 0
  const dense = softmax(Tensor.where(top.selected, logits, -Infinity));
  return { weights, indices: top.indices, dense };
}

/**
 * Each expert's routing weight under softmax-then-topk without renormalisation (Jamba), as E columns [N,1]: the
 * probability where fewer than k experts beat it (a higher probability, or an equal one at a lower index: topK's
 * order), else 0. One length-E count per expert instead of topK's k rounds of max and first index, and columns
 * rather than one [N,E] tensor: a shared [N,E] selection gets a buffer (two single-workgroup kernels at decode),
 * while each column inlines into the kernel that scales its expert's output.
 */
export function topkProbabilityColumns(logits: Tensor, k: number): Tensor[] {
  const [N, E] = logits.shape as [number, number];
  if (k < 1 || k > E) throw new ShapeError(`[topkProbabilityColumns] k=${k} must be in 1..${E} for logits (${N},${E})`);
  const probs = softmax(logits); // [N,E]
  const expert = iota([N, E], 1);
  return Array.from({ length: E }, (_, e) => {
    const p = probs.slice(1, e, e + 1); // [N,1]
    const beats = probs.gt(p).or(probs.eq(p).and(expert.lt(e))); // [N,E]
    const rank = Tensor.where(beats, 1, 0).sum(-1, true); // [N,1]
    // p first (a product, not a where, whose condition a kernel evaluates first): the row's softmax max and sum are
    // then computed once, outside the rank's loop, which reuses them
    return p.mul(Tensor.where(rank.lt(k), 1, 0));
  });
}

/**
 * Expert weights stacked along a leading expert axis (HF layout per expert, [out, in]). The loader stacks the hub's
 * per-expert tensors (`experts.{e}.gate_proj.weight`, ...) into one buffer: one binding however many experts.
 *   gateUp: [E, 2I, H] with the gate (activated) half first (Granite input_linear, HF v5 gate_up_proj)
 *   gate, up: [E, I, H] each;  up alone: a non-gated expert act(up x) (NemotronH)
 *   down: [E, H, I]
 */
export type ExpertWeights = { gateUp: Tensor; down: Tensor } | { gate: Tensor; up: Tensor; down: Tensor } | { up: Tensor; down: Tensor };

export interface SharedExpert {
  /** Same layouts as ExpertWeights without the expert axis. */
  weights: { gateUp: Tensor; down: Tensor } | { gate: Tensor; up: Tensor; down: Tensor } | { up: Tensor; down: Tensor };
  /** Qwen3-Next shared_expert_gate [1, H]: the shared output is scaled by sigmoid(x . g). */
  gate?: Tensor;
}

export interface MoeOptions {
  /** 'dense' evaluates every expert; 'gather' reads only the chosen experts' weights (default). */
  strategy?: 'dense' | 'gather';
  normTopkProb?: boolean;
  /** Expert activation (silu; relu2 for NemotronH's non-gated experts). */
  activation?: string;
}

function act(x: Tensor, name: string): Tensor {
  return name === 'relu2' ? x.relu().square() : activate(x, name);
}

/** One expert (or a batch of them, weights broadcast against x's leading dims): x [..., M, H] -> [..., M, H]. */
function expertFfn(x: Tensor, w: SharedExpert['weights'], activation: string): Tensor {
  const t = (m: Tensor) => m.T; // [.., out, in] -> [.., in, out]
  let hidden: Tensor;
  if ('gateUp' in w) {
    const I = w.gateUp.shape[w.gateUp.rank - 2]! / 2;
    const [gate, up] = x.matmul(t(w.gateUp)).split(-1, [I, I]) as [Tensor, Tensor];
    hidden = act(gate, activation).mul(up);
  } else if ('gate' in w) hidden = act(x.matmul(t(w.gate)), activation).mul(x.matmul(t(w.up)));
  else hidden = act(x.matmul(t(w.up)), activation);
  return hidden.matmul(t(w.down));
}

/** The expert weights of the chosen experts: [E, ...] -> [N, k, ...] (a gather view: nothing is copied). */
function gatherExperts(w: ExpertWeights, indices: Tensor): SharedExpert['weights'] {
  const pick = (m: Tensor) => m.gather(indices);
  if ('gateUp' in w) return { gateUp: pick(w.gateUp), down: pick(w.down) };
  if ('gate' in w) return { gate: pick(w.gate), up: pick(w.up), down: pick(w.down) };
  return { up: pick(w.up), down: pick(w.down) };
}

/**
 * y = sum over the top-k experts e of w_e * expert_e(x)  (+ shared expert).  x [N,H], routerWeight [E,H] -> [N,H].
 *
 * Cost: 'dense' runs all E experts on every token (E/k times the useful FLOPs and reads every expert's
 * weights) and weights the unselected ones by zero — simple, and what prefill with many tokens touches anyway.
 * 'gather' indexes the stacked weights with the routing indices, so each token reads only its k experts'
 * weights: the right choice for decode (N small), whose cost is weight bandwidth.
 */
export function moe(x: Tensor, routerWeight: Tensor, experts: ExpertWeights, topk: number, mode: RoutingMode, sharedExpert?: SharedExpert, options: MoeOptions = {}): Tensor {
  const [N, H] = x.shape as [number, number];
  const E = routerWeight.shape[0]!;
  const stackE = experts.down.shape[0]!;
  if (routerWeight.shape[1] !== H || stackE !== E)
    throw new ShapeError(`[moe] router (${routerWeight.shape.join(',')}) and experts down (${experts.down.shape.join(',')}) must agree with x (${N},${H}): E=${E}`);
  const activation = options.activation ?? 'silu';
  const routing = route(linear(x, routerWeight), topk, mode, options.normTopkProb ?? false);

  let y: Tensor;
  if ((options.strategy ?? 'gather') === 'dense') {
    const all = expertFfn(x.reshape(1, N, H), experts, activation); // [E,N,H]
    y = all.mul(routing.dense.T.reshape(E, N, 1)).sum(0); // [N,H]
  } else {
    const chosen = gatherExperts(experts, routing.indices); // [N,k,out,in]
    const out = expertFfn(x.reshape(N, 1, 1, H), chosen, activation); // [N,k,1,H]
    y = out.reshape(N, topk, H).mul(routing.weights.reshape(N, topk, 1)).sum(1); // [N,H]
  }
  if (sharedExpert) {
    let shared = expertFfn(x, sharedExpert.weights, activation);
    if (sharedExpert.gate) shared = shared.mul(linear(x, sharedExpert.gate).sigmoid());
    y = y.add(shared);
  }
  return y;
}
