// What an architecture provides: its memory spec, its forward pass in the DSL, its head, and the computed
// constants it needs beside the checkpoint. Weights are named exactly as in the HF checkpoint.
import type { Tensor } from '../dsl/tensor.ts';
import type { MemorySpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';

export interface ModelDef {
  family: string;
  vocabSize: number;
  hiddenSize: number;
  eosTokenIds: number[];
  memory(): MemorySpec;
  /** Final hidden states [S, T, hidden] (after the last norm). */
  forward(ctx: StepContext): Tensor;
  /** Logits [..., vocab] from hidden states [..., hidden]. */
  logits(ctx: StepContext, hidden: Tensor): Tensor;
  /** Values of weights the model computes rather than loads (RoPE frequencies, multiplier vectors). */
  constants(): Record<string, Float32Array>;
}
